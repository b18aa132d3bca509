"""Tokenizer training with Accelerate, for single-scale VQ, multi-scale (VAR) and hybrid (HART) tokenizers,
from one CPU process to many GPUs. ``train/tokenizer.py`` and ``artok train tokenizer`` call
``train_tokenizer``: the one loop (``run``) with the tokenizer objective (``objectives.tokenizer``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from artok.config import TokenizerTrainConfig
from artok.training.ema import EMA
from artok.training.objectives.tokenizer import TokenizerObjective
from artok.training.run import build_accelerator, run  # noqa: F401  (build_accelerator: for benchmarks)

EXPORT_DIR = TokenizerObjective.export_name


@dataclass
class TrainResult:
    """What a run leaves: the step reached, paths, the held-out evaluation (main process), and the live
    models of this process (for inspection in tests and notebooks)."""

    step: int
    out_dir: Path
    export_dir: Path
    bad_files: int
    eval: dict = field(default_factory=dict)
    tokenizer: torch.nn.Module | None = None
    ema: EMA | None = None

    def summary(self) -> dict:
        return {"step": self.step, "out_dir": str(self.out_dir), "export": str(self.export_dir),
                "bad_files": self.bad_files, "eval": self.eval}


def train_tokenizer(cfg: TokenizerTrainConfig, *, progress: bool = True) -> TrainResult:
    """Train, checkpoint, export and evaluate; returns the final step, eval results and output paths."""
    objective = TokenizerObjective(cfg)
    result = run(objective, progress=progress)
    return TrainResult(step=result.step, out_dir=result.out_dir, export_dir=result.export_dir,
                       bad_files=len(objective.bad_files), eval=result.finished, tokenizer=result.model,
                       ema=result.ema)
