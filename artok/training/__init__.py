"""Training with Accelerate: step functions (``loop``), EMA, optimizers and schedules, checkpoints and
resumption, reports, and the tokenizer and generator trainers. Only this package and the CLI import
``accelerate``."""
