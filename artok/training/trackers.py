"""Experiment trackers through Accelerate (TensorBoard by default; wandb, MLflow, ... when installed): checked
before a run starts, started with an error that names the tracker, and sample grids logged to each."""
from __future__ import annotations

import numpy as np

from artok.config import ConfigError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet-ml", "aim": "aim",
                    "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}  # Accelerate's trackers → the package each needs


def check_trackers(names) -> list[str]:
    """The trackers of ``train.trackers`` (``none`` left out), each known to Accelerate and installed; else a
    ConfigError naming the package to install. Accelerate itself would only log that it left one out, and
    the run would go on unlogged."""
    from accelerate.tracking import get_available_trackers

    available = {getattr(t, "value", str(t)) for t in get_available_trackers()}
    names = [t for t in names if t != "none"]
    for name in names:
        if name != "all" and name not in TRACKER_PACKAGES:
            raise ConfigError(f"train.trackers: unknown tracker '{name}'; Accelerate's are "
                              f"{', '.join(TRACKER_PACKAGES)} (or all, or none)")
        if name != "all" and name not in available:
            raise ConfigError(f"train.trackers: '{name}' is not installed: `pip install {TRACKER_PACKAGES[name]}`, "
                              f"or leave it out of train.trackers")
    return names


def start_trackers(accelerator, project: str, cfg) -> None:
    """``init_trackers``, with an error that says which tracker could not start (a wandb run without a
    login, say) instead of a traceback from inside it."""
    try:
        accelerator.init_trackers(project, config=flat_config(cfg))
    except Exception as e:
        names = ", ".join(cfg.train.trackers)
        hint = " (`wandb login`, or WANDB_MODE=offline to log locally)" if "wandb" in cfg.train.trackers else ""
        raise ConfigError(f"train.trackers: {names} could not start{hint}: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from e


def flat_config(cfg) -> dict:
    """Dotted scalar hyper-parameters, as TensorBoard's hparams want them."""
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", cfg.to_dict())
    return out


def log_images(accelerator, name: str, grid: np.ndarray, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: grid[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):  # wandb and others take (H, W, 3) arrays and no dataformats
            tracker.log_images({name: grid[None]}, step=step)
