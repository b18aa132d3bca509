"""End-to-end runs built from the library's layers: ``artok quickstart`` and its report."""
