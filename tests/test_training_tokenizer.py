"""End-to-end tokenizer training: the CLI on a folder of broken and odd files with automatic resume, and the
acceptance test: 2-process CPU training (Accelerate, gloo) stopped, resumed and continued ends identical
to an uninterrupted run, with identical codebooks on both processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import artok
from artok.cli import main as cli

ROOT = Path(__file__).parent.parent
TINY = ROOT / "configs" / "tiny" / "train-var-tokenizer.yaml"
FAST = ["--train.batch_size=2", "--train.log_every=1", "--train.sample_every=2", "--train.save_every=2",
        "--train.eval_images=4", "--train.warmup_steps=0", "--data.num_workers=0"]


@pytest.fixture
def fresh_accelerate_state():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_cli_trains_on_broken_and_odd_files_reports_them_and_resumes(tmp_path, fresh_accelerate_state):
    from test_data import write_odd_and_broken_files

    broken = write_odd_and_broken_files(tmp_path / "images")
    out = tmp_path / "run"
    args = ["train", "tokenizer", "--config", str(TINY), "--data", str(tmp_path / "images"), "--out-dir", str(out),
            "--no-progress", *FAST, "--train.batch_size=9", "--train.max_steps=2", "--train.checkpoints_total_limit=1"]
    assert cli(args) == 0
    reported = (out / "bad_files.txt").read_text().splitlines()
    # one batch is one epoch of the 9 files: every broken one is reported, with its reason
    assert {line.split("\t")[0].rsplit("/", 1)[-1] for line in reported} == broken
    assert all("\t" in line for line in reported)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[-1]["bad_files"] == 3
    assert {"usage/1x1", "usage/2x2", "usage/4x4", "perplexity/4x4", "lr", "psnr"} <= set(records[-1])
    for path in ("config.yaml", "samples/step_0000002.png", "loss_curves.png", "eval.json", "tokenizer/config.json"):
        assert (out / path).is_file(), path
    assert list((out / "logs").rglob("events.out.tfevents*"))  # TensorBoard by default

    assert cli([*args[:-2], "--train.max_steps=3", "--train.checkpoints_total_limit=1"]) == 0  # resumes at 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint_1"]  # rotated to the limit
    exported = artok.from_pretrained(out / "tokenizer")
    assert exported.scales == (1, 2, 4)
    assert json.loads((out / "eval.json").read_text())["images"] == 4


@pytest.mark.slow  # two training runs; .ci/run runs it
def test_a_fresh_start_in_a_used_out_dir_numbers_its_checkpoints_after_the_old_ones(tmp_path, fresh_accelerate_state):
    """train.resume=never in an out_dir that holds checkpoints (a rerun of the same command, as `artok
    quickstart --out X` twice does): the run saves after the old folders instead of failing at its first save
    (Accelerate refuses to overwrite checkpoint_0), and the old checkpoint is still there."""
    out = tmp_path / "run"
    args = ["train", "tokenizer", "--config", str(TINY), "--data", "procedural", "--out-dir", str(out), "--no-progress",
            *FAST, "--train.max_steps=2", "--train.resume=never", "--train.trackers=[none]"]
    assert cli(args) == 0
    first = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert cli(args) == 0
    second = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert set(first) < set(second) and len(second) == 2 * len(first)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-2:] == [1, 2]  # the second run started again from step 1


def test_hybrid_tokenizer_trains_from_a_var_tokenizer_with_frozen_encoder_and_codebook(tmp_path,
                                                                                    fresh_accelerate_state):
    from artok.config import TokenizerTrainConfig
    from artok.training.args import load_config
    from artok.training.tokenizer_trainer import train_tokenizer

    torch.manual_seed(0)
    var = artok.build_tokenizer("tiny-var-vqvae")
    var.save_pretrained(tmp_path / "var")
    cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tiny" / "train-hart-tokenizer.yaml",
                      [f"--train.init_from={tmp_path / 'var'}", f"--train.out_dir={tmp_path / 'run'}", *FAST,
                       "--train.max_steps=1", "--train.trackers=[]", "--train.eval_images=2"])
    result = train_tokenizer(cfg, progress=False)
    tok = result.tokenizer
    assert type(tok).__name__ == "HybridTokenizer"
    assert torch.equal(tok.encoder.conv_in.weight, var.encoder.conv_in.weight)  # frozen
    assert torch.equal(tok.quantizer.codebook.weight, var.quantizer.codebook.weight)  # frozen
    assert not torch.equal(tok.decoder.conv_out.weight, var.decoder.conv_out.weight)  # trained
    assert type(artok.from_pretrained(tmp_path / "run" / "tokenizer")).__name__ == "HybridTokenizer"
    assert {"psnr", "psnr_discrete"} <= set(result.eval)


def test_cli_dry_run_and_bad_override(capsys):
    assert cli(["train", "tokenizer", "--config", str(TINY), "--dry-run", "--train.lr=1e-3"]) == 0
    assert "lr: 0.001" in capsys.readouterr().out
    assert cli(["train", "tokenizer", "--config", str(TINY), "--dry-run", "--train.lrr=1e-3"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["info", "x", "--train.lr=1"])  # other commands take no overrides


TWO_PROCESS_RUN = textwrap.dedent("""
    import os, sys
    from pathlib import Path

    def run(out_dir, max_steps):
        from safetensors.torch import save_file
        from artok.config import TokenizerTrainConfig
        from artok.training.tokenizer_trainer import train_tokenizer

        cfg = TokenizerTrainConfig.from_dict({
            "tokenizer": "tiny-var-vqvae",
            "data": {"source": "procedural", "num_samples": 64, "num_workers": 0},
            "loss": {"perceptual_weight": 0.0},
            "train": {"out_dir": str(out_dir), "batch_size": 2, "max_steps": max_steps, "log_every": 1,
                      "sample_every": 100, "save_every": 2, "trackers": [], "eval_images": 0, "ema_decay": 0.9,
                      "warmup_steps": 3, "lr": 1e-3},
        }).override({"tokenizer.quantizer.dead_code_threshold": 0.5})  # restarts on most steps
        result = train_tokenizer(cfg, progress=False)
        state = {f"model.{k}": v for k, v in result.tokenizer.state_dict().items()}
        state.update({f"ema.{k}": v for k, v in result.ema.shadow.state_dict().items()})
        save_file({k: v.contiguous() for k, v in state.items()},
                  str(Path(out_dir) / f"final_rank{os.environ['RANK']}.safetensors"))

    if __name__ == "__main__":
        from accelerate import notebook_launcher

        from artok.commands.train import free_port

        root = Path(sys.argv[1])
        for out_dir, steps in (("uninterrupted", 3), ("resumed", 2), ("resumed", 3)):  # stop at 2, then resume
            notebook_launcher(run, (root / out_dir, steps), num_processes=2, use_port=str(free_port()))
""")


def _differences(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [f"{k}: max |Δ| {float((a[k].double() - b[k].double()).abs().max()):.3g}"
            for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_two_process_training_resumes_identically_with_identical_codebooks(tmp_path):
    script = tmp_path / "two_process.py"
    script.write_text(TWO_PROCESS_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {name: [load_file(str(tmp_path / name / f"final_rank{r}.safetensors")) for r in (0, 1)]
            for name in ("uninterrupted", "resumed")}
    for name, (rank0, rank1) in runs.items():
        assert not _differences(rank0, rank1), f"{name}: processes diverged: {_differences(rank0, rank1)[:5]}"
    assert not _differences(runs["uninterrupted"][0], runs["resumed"][0]), "resumed run differs from uninterrupted"
    codebook = runs["uninterrupted"][0]
    assert int(codebook["model.quantizer.codebook.num_updates"]) == 3
    logs = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("uninterrupted", "resumed")]
    timeless = [[{k: v for k, v in r.items() if k != "images_per_second"} for r in log] for log in logs]
    assert timeless[0] == timeless[1]  # the same losses, usage and lr at every step
    assert sum(r["restarted_codes"] for r in logs[0]) > 0  # dead-code restarts happened, and stayed in sync
    # a prepared scheduler ticks once per process per step; the schedule still counts optimizer steps
    assert [r["lr"] for r in logs[0]] == pytest.approx([2e-3 / 3, 1e-3, 1e-3])


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_accelerate_launch_two_processes_with_gan_and_accumulation(tmp_path):
    """The CLI relaunching itself under `accelerate launch`: GAN on, gradient accumulation 2, resume."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "artok.cli", "train", "tokenizer", "--config", str(TINY), "--data", "procedural",
            "--out-dir", str(out), "--num-processes", "2", "--no-progress", *FAST,
            "--train.gradient_accumulation_steps=2", "--loss.gan_weight=0.1", "--loss.gan_start_step=1",
            "--loss.discriminator_channels=8", "--data.num_samples=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps in (2, 3):
        proc = subprocess.run([*base, f"--train.max_steps={steps}"], capture_output=True, text=True, env=env,
                              timeout=900, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "discriminator" in records[-1]
    assert "resumed from" in proc.stdout
