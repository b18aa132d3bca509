"""The training loop's EMA (ema-pytorch) and learning-rate schedule against what they must be: the EMA's decay
warm-up and buffers, checkpoints written by artok's earlier EMA, the schedule's agreement with diffusers'
``get_scheduler`` where the two overlap, and a stopped-and-resumed run ending bit-identical to a straight one."""
from __future__ import annotations

import json

import pytest
import torch

from artok.config import TokenizerTrainConfig
from artok.training.ema import EMA
from artok.training.objectives.tokenizer import TokenizerObjective
from artok.training.optim import build_scheduler, lr_factor
from artok.training.tokenizer_trainer import train_tokenizer


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


# -- EMA -------------------------------------------------------------------------------------------------------

def test_ema_follows_the_warm_up_decay_and_copies_buffers():
    """shadow_1 = model_1; shadow_k = d·shadow + (1 − d)·model_k, d = min(decay, (1+n)/(10+n)), n = k − 1;
    buffers, float (running statistics) and integer (counters), are copied."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.5)
    expected = None
    for n in range(6):
        perturb(model, g)
        model.train()(torch.randn(8, 6, generator=g))  # moves running_mean/var, counts num_batches_tracked
        ema.update()
        weights = {k: p.detach().double() for k, p in model.named_parameters()}
        d = min(0.5, (1 + n) / (10 + n))
        expected = dict(weights) if expected is None else {k: d * expected[k] + (1 - d) * weights[k] for k in weights}
        for k, p in ema.shadow.named_parameters():
            torch.testing.assert_close(p.double(), expected[k], rtol=1e-6, atol=1e-6, msg=f"{k} after {n + 1} updates")
        for k, b in model.named_buffers():
            assert torch.equal(dict(ema.shadow.named_buffers())[k], b), f"buffer {k} is not copied"
    assert ema.num_updates == 6 and int(ema.shadow[1].num_batches_tracked) == 6


def test_ema_state_round_trips_and_old_artok_ema_states_continue_the_same_average():
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Linear(4, 3)
    ema = EMA(model, decay=0.99)
    for _ in range(3):
        perturb(model, g)
        ema.update()
    again = EMA(model, decay=0.5)
    again.load_state_dict(ema.state_dict())
    assert again.decay == 0.99 and again.num_updates == 3

    # artok's hand-written EMA saved {"shadow", "num_updates", "decay"}: resuming such a run continues with n = 3
    old_state = {"shadow": {k: v.clone() for k, v in ema.shadow.state_dict().items()}, "num_updates": 3,
                 "decay": 0.99}
    old = EMA(model, decay=0.5)
    old.load_state_dict(old_state)
    before = {k: v.double() for k, v in old.shadow.state_dict().items()}
    perturb(model, g)
    for e in (ema, again, old):
        e.update()
    d = min(0.99, (1 + 3) / (10 + 3))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(old.shadow.state_dict()[k].double(), d * before[k] + (1 - d) * v.double(),
                                   rtol=1e-5, atol=1e-6)
        assert torch.equal(again.shadow.state_dict()[k], ema.shadow.state_dict()[k])
        assert torch.equal(old.shadow.state_dict()[k], ema.shadow.state_dict()[k])


# -- learning-rate schedule ---------------------------------------------------------------------------------------

def learning_rates(make_scheduler, *, max_steps: int, ticks_per_step: int = 1) -> list[float]:
    """The lr of each optimizer step, the scheduler stepped ``ticks_per_step`` times a step (once per process
    under Accelerate)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt)
    out = []
    for _ in range(max_steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        for _ in range(ticks_per_step):
            sched.step()
    return out


def diffusers_lrs(name: str, *, warmup_steps: int, max_steps: int, ticks_per_step: int = 1) -> list[float]:
    from diffusers.optimization import get_scheduler

    return learning_rates(lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup_steps * ticks_per_step,
                                                    num_training_steps=max_steps * ticks_per_step),
                          max_steps=max_steps, ticks_per_step=ticks_per_step)


def artok_lrs(schedule: str, *, warmup_steps: int, max_steps: int, ticks_per_step: int = 1) -> list[float]:
    return learning_rates(lambda opt: build_scheduler(opt, schedule=schedule, warmup_steps=warmup_steps,
                                                      max_steps=max_steps, ticks_per_step=ticks_per_step),
                          max_steps=max_steps, ticks_per_step=ticks_per_step)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_the_schedules_are_diffusers_get_scheduler_after_the_warm_up(schedule):
    """The decays agree with diffusers' (also counted per process, as Accelerate steps a prepared scheduler);
    the warm-up is where they part: diffusers' first step has lr 0 (optim.py says why artok keeps its own)."""
    name = "constant_with_warmup" if schedule == "constant" else schedule
    for ticks in (1, 2):
        ours = artok_lrs(schedule, warmup_steps=0, max_steps=20, ticks_per_step=ticks)
        theirs = diffusers_lrs(schedule, warmup_steps=0, max_steps=20, ticks_per_step=ticks)
        assert ours == pytest.approx(theirs, abs=1e-12)
        ours = artok_lrs(schedule, warmup_steps=4, max_steps=20, ticks_per_step=ticks)
        theirs = diffusers_lrs(name, warmup_steps=4, max_steps=20, ticks_per_step=ticks)
        assert ours[4:] == pytest.approx(theirs[4:], abs=1e-12)
        assert theirs[0] == 0.0 and ours[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(19, schedule=schedule, warmup_steps=0, max_steps=20, min_lr_ratio=0.1) >= 0.1


# -- resume ----------------------------------------------------------------------------------------------------------

def tokenizer_config(out_dir) -> TokenizerTrainConfig:
    return TokenizerTrainConfig.from_dict({
        "tokenizer": "tiny-var-vqvae",
        "data": {"source": "procedural", "num_samples": 32, "num_workers": 0},
        "loss": {"perceptual_weight": 0.0},
        "train": {"out_dir": str(out_dir), "batch_size": 2, "max_steps": 4, "log_every": 1, "sample_every": 100,
                  "save_every": 2, "trackers": ["none"], "eval_images": 0, "ema_decay": 0.9, "lr": 1e-3,
                  "lr_schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
    }).override({"tokenizer.quantizer.ema_decay": 0.9})  # EMA codebook: its sums and counters are buffers


@pytest.mark.slow
def test_a_run_stopped_after_its_checkpoint_and_resumed_ends_bit_identical(tmp_path, monkeypatch):
    """N steps straight vs N/2, a save, a kill, a resume and N/2 more: the same weights, EMA, buffers and
    learning rates (warm-up, cosine decay to a floor)."""
    straight = train_tokenizer(tokenizer_config(tmp_path / "straight"), progress=False)
    real_loss, calls = TokenizerObjective.loss, []

    def killed_at_the_third_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(TokenizerObjective, "loss", killed_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(tokenizer_config(tmp_path / "resumed"), progress=False)
    monkeypatch.setattr(TokenizerObjective, "loss", real_loss)
    resumed = train_tokenizer(tokenizer_config(tmp_path / "resumed"), progress=False)
    assert resumed.step == straight.step == 4
    for name, a, b in (("model", straight.tokenizer, resumed.tokenizer), ("ema", straight.ema.shadow,
                                                                          resumed.ema.shadow)):
        sa, sb = a.state_dict(), b.state_dict()
        different = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not different, f"{name} differs after resume: {different[:5]}"
    lrs = [[r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
           for run in (tmp_path / "straight", tmp_path / "resumed")]
    assert lrs[0] == lrs[1] and len(set(lrs[0])) > 2
