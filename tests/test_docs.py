"""The config paths the README, the CLI help and the entry scripts name exist (brace patterns expanded)."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "README.md", *(ROOT / "artok").rglob("*.py"), *(ROOT / "train").glob("*.py"),
           *(ROOT / "sample").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "configs").rglob("*.yaml")]
PATH = re.compile(r"configs/[A-Za-z0-9_./{},*-]+\.yaml")


def expand(pattern: str) -> list[str]:
    """``a-{x,y}-b`` → ``[a-x-b, a-y-b]`` (several brace groups multiply)."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_every_config_path_named_in_docs_and_help_exists():
    named = {m for source in SOURCES for m in PATH.findall(source.read_text(encoding="utf-8"))}
    assert len(named) > 10, named
    missing = []
    for pattern in sorted(named):
        for path in expand(pattern):
            found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
            if not found:
                missing.append(f"{path} (named as {pattern})")
    assert not missing, "named but missing:\n" + "\n".join(missing)


def test_every_source_path_named_in_the_readme_and_docs_exists():
    """The layout the README's "Where things are" and docs/reference-behaviour.md describe is the real one."""
    module = re.compile(r"`(artok/[A-Za-z0-9_/]+(?:\.py|/))`")
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    named = {m for doc in docs for m in module.findall(doc.read_text(encoding="utf-8"))}
    assert len(named) > 20, named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, "named but missing: " + ", ".join(missing)
