"""Generator training with Accelerate: the next-scale (VAR) or HART transformer on token ids, from the shards
that ``artok encode`` writes or from images tokenized on the fly. ``train/generator.py`` and
``artok train generator`` call ``train_generator``: the one loop (``run``) with the objective of the model
kind (``objectives.var``, ``objectives.hart``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from artok.config import GeneratorConfig, GeneratorTrainConfig, HartConfig
from artok.training.ema import EMA
from artok.training.objectives.generator import GeneratorObjective
from artok.training.objectives.hart import HartObjective
from artok.training.objectives.var import VarObjective
from artok.training.run import run

OBJECTIVES: dict[type, type[GeneratorObjective]] = {GeneratorConfig: VarObjective, HartConfig: HartObjective}
EXPORT_DIR = GeneratorObjective.export_name


@dataclass
class GeneratorTrainResult:
    step: int
    out_dir: Path
    export_dir: Path
    final_loss: float | None = None
    main_process: bool = True
    generator: torch.nn.Module | None = None
    ema: EMA | None = None

    def summary(self) -> dict:
        return {"step": self.step, "out_dir": str(self.out_dir), "export": str(self.export_dir),
                "final_loss": self.final_loss}


def objective_for(cfg: GeneratorTrainConfig) -> GeneratorObjective:
    """The objective of the configured model kind (a ``GeneratorConfig``: VAR; a ``HartConfig``: HART)."""
    return OBJECTIVES[type(cfg.generator)](cfg)


def train_generator(cfg: GeneratorTrainConfig, *, progress: bool = True,
                    evaluate: Callable[[torch.nn.Module, torch.nn.Module], dict] | None = None) -> GeneratorTrainResult:
    """Train, checkpoint, draw sample grids and export (tokenizer + EMA generator) as a pipeline.

    ``evaluate(generator, tokenizer)``, when given, runs on the main process with every sample grid and at the
    end, on the weights that are exported (EMA when kept); the numbers it returns go into ``metrics.jsonl`` at
    that step (the quickstart records its samples' class accuracy against steps this way)."""
    cfg.check_runnable()
    objective = objective_for(cfg)
    score = None if evaluate is None else (lambda generator: evaluate(generator, objective.tok))
    result = run(objective, progress=progress, evaluate=score)
    return GeneratorTrainResult(step=result.step, out_dir=result.out_dir, export_dir=result.export_dir,
                                final_loss=result.last_record.get("loss"), main_process=result.main_process,
                                generator=result.model, ema=result.ema)
