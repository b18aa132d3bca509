"""Experiment trackers (``train.trackers``): one that cannot start stops the run before it trains, naming the
package to install; TensorBoard and wandb's offline mode really receive the run's scalars and grids."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from artok.cli import main as cli
from artok.config import ConfigError, TokenizerTrainConfig
from artok.training.tokenizer_trainer import train_tokenizer
from artok.training.trackers import start_trackers

TINY = Path(__file__).parent.parent / "configs" / "tiny" / "train-var-tokenizer.yaml"


def config(out_dir, trackers, **train) -> TokenizerTrainConfig:
    return TokenizerTrainConfig.from_dict({
        "tokenizer": "tiny-var-vqvae",
        "data": {"source": "procedural", "num_samples": 16, "num_workers": 0},
        "loss": {"perceptual_weight": 0.0},
        "train": {"out_dir": str(out_dir), "batch_size": 2, "max_steps": 2, "log_every": 1, "sample_every": 2,
                  "save_every": 2, "trackers": trackers, "eval_images": 0, "ema_decay": 0.9, **train},
    })


def test_a_tracker_that_is_not_installed_stops_the_run_before_it_trains(tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])  # as if TensorBoard were absent
    with pytest.raises(ConfigError, match=r"'tensorboard' is not installed: `pip install tensorboard`"):
        train_tokenizer(config(tmp_path / "run", ["tensorboard"]), progress=False)
    assert not (tmp_path / "run").exists(), "nothing was written: the run did not start"
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'.*tensorboard, wandb"):
        train_tokenizer(config(tmp_path / "run", ["tensorbord"]), progress=False)


@pytest.mark.skipif(importlib.util.find_spec("comet_ml") is not None, reason="comet_ml is installed here")
def test_the_cli_names_the_package_of_a_missing_tracker(tmp_path, capsys):
    code = cli(["train", "tokenizer", "--config", str(TINY), "--out-dir", str(tmp_path / "run"), "--no-progress",
                "--train.trackers=[comet_ml]"])
    assert code == 2
    assert "'comet_ml' is not installed: `pip install comet-ml`" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_tracker_that_fails_to_start_says_which_and_how_to_log_offline(tmp_path):
    class Refusing:
        def init_trackers(self, project, config):
            raise RuntimeError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    with pytest.raises(ConfigError, match=r"wandb could not start \(`wandb login`, or WANDB_MODE=offline.*api_key"):
        start_trackers(Refusing(), "artok", config(tmp_path, ["wandb"]))


@pytest.mark.slow
def test_tensorboard_receives_the_scalars_and_the_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train_tokenizer(config(tmp_path / "run", ["tensorboard"]), progress=False)
    logs = tmp_path / "run" / "logs" / "artok-tokenizer"
    events = EventAccumulator(str(logs), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert [e.step for e in events.Images("reconstructions")] == [2]
    summary = json.loads((result.export_dir / "training.json").read_text())  # what the model card reports
    assert summary["steps"] == 2 and summary["metrics"]["loss"] == pytest.approx(events.Scalars("loss")[-1].value)


@pytest.mark.slow
def test_wandb_offline_mode_writes_the_run_locally(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_tokenizer(config(tmp_path / "run", ["wandb"]), progress=False)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run under {tmp_path / 'wandb'}"
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1 and b"loss" in records[0].read_bytes(), "the run's scalars are written locally"
    assert list((runs[0] / "files" / "media" / "images").glob("reconstructions_2_*.png")), "and the step-2 grid"
