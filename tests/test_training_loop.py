"""Training building blocks on one CPU process: schedules, parameter groups, EMA, freezing, config
overrides, and the G/D step with Accelerate."""
from __future__ import annotations

import pytest
import torch

import artok
from artok.config import ConfigError, LossConfig, TokenizerTrainConfig, TrainConfig
from artok.losses import PatchDiscriminator, TokenizerLoss
from artok.training.args import load_config, parse_overrides
from artok.training.checkpoint import freeze
from artok.training.ema import EMA
from artok.training.objectives.tokenizer import frozen, gan_step
from artok.training.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from artok.training.run import RunningMeans, StepClock


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_lr_schedules():
    kw = dict(warmup_steps=4, max_steps=14)
    assert [lr_factor(s, schedule="constant", **kw) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(9, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(14, schedule="cosine", min_lr_ratio=0.1, **kw) == pytest.approx(0.1)
    assert lr_factor(9, schedule="linear", **kw) == pytest.approx(0.5)


def test_scheduler_counts_optimizer_steps_when_accelerate_ticks_once_per_process():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, schedule="constant", warmup_steps=4, max_steps=10, ticks_per_step=2)
    lrs = []
    for _ in range(3):  # what a prepared scheduler does on 2 processes for each optimizer step
        opt.step()
        sched.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx([0.5, 0.75, 1.0])


def test_parameter_groups_skip_decay_on_codebook_biases_and_norms():
    tok = artok.build_tokenizer("tiny-var-vqvae")
    decay, no_decay = parameter_groups(tok, 0.05)
    decayed = {id(p) for p in decay["params"]}
    assert id(tok.quantizer.codebook.embedding.weight) not in decayed
    assert id(tok.encoder.conv_in.bias) not in decayed and id(tok.encoder.conv_in.weight) in decayed
    assert no_decay["weight_decay"] == 0.0
    total = sum(p.numel() for p in tok.parameters() if p.requires_grad)
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == total


def test_ema_update_and_state_round_trip():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()  # first update: a copy of the model
    assert torch.equal(ema.shadow.weight, model.weight)
    before = ema.shadow.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()  # second: d = min(0.9, (1 + 1) / (10 + 1))
    assert torch.allclose(ema.shadow.weight, 2 / 11 * before + 9 / 11 * model.weight)
    other = EMA(torch.nn.Linear(2, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow.weight, ema.shadow.weight) and other.num_updates == 2 and other.decay == 0.9
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_freeze_by_prefix_and_typo_error():
    tok = artok.build_tokenizer("tiny-var-vqvae")
    n = freeze(tok, ["encoder", "quantizer.codebook"])
    assert n > 0 and not tok.encoder.conv_in.weight.requires_grad
    assert not tok.quantizer.codebook.embedding.weight.requires_grad and tok.decoder.conv_out.weight.requires_grad
    with pytest.raises(ValueError, match="no parameter under 'encodr'.*top-level modules: decoder, encoder"):
        freeze(tok, ["encodr"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(freeze(tok, ["decoder", "quant_conv", "post_quant_conv", "quantizer"]) and tok, lr=1e-4,
                        betas=(0.5, 0.9))


def test_frozen_context_restores_flags():
    d = PatchDiscriminator(channels=8, num_layers=1)
    with frozen(d):
        assert not any(p.requires_grad for p in d.parameters())
    assert all(p.requires_grad for p in d.parameters())


def test_overrides_and_config_errors(tmp_path):
    assert parse_overrides(["--train.lr=3e-4", "--train.betas", "[0.9, 0.95]", "--loss.gan_weight=0"]) == {
        "train.lr": "3e-4", "train.betas": [0.9, 0.95], "loss.gan_weight": 0}
    with pytest.raises(ConfigError, match="name a section"):
        parse_overrides(["--lr=3"])
    (tmp_path / "c.yaml").write_text("tokenizer: tiny-vq\ntrain: {max_steps: 5}\n")
    cfg = load_config(TokenizerTrainConfig, tmp_path / "c.yaml", ["--train.lr=3e-4", "--tokenizer.quantizer.codebook_size=32"])
    assert cfg.train.lr == 3e-4 and cfg.train.max_steps == 5 and cfg.tokenizer.quantizer.codebook_size == 32
    with pytest.raises(ConfigError, match="unknown key 'lrr'.*did you mean 'lr'"):
        load_config(TokenizerTrainConfig, None, ["--train.lrr=1"])
    with pytest.raises(ConfigError, match="train.mixed_precision: unknown 'fp8'"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ConfigError, match="loss.gan_weight must be >= 0"):
        LossConfig(gan_weight=-1.0)
    with pytest.raises(ConfigError, match="unknown tokenizer preset"):
        TokenizerTrainConfig.from_dict({"tokenizer": "tiny-vqq"})


@pytest.mark.parametrize("preset", ["tiny-var-vqvae", "tiny-vq"])
def test_gan_step_updates_tokenizer_then_discriminator(accelerator, preset):
    torch.manual_seed(0)
    tok = artok.build_tokenizer(preset)
    disc = PatchDiscriminator(channels=8, num_layers=2)
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, gan_weight=0.1, gan_start_step=1, entropy_weight=0.1))
    opt, d_opt = build_optimizer(tok, lr=1e-3, betas=(0.5, 0.9)), build_optimizer(disc, lr=1e-3, betas=(0.5, 0.9))
    sched, d_sched = (build_scheduler(o, schedule="constant", warmup_steps=0, max_steps=10) for o in (opt, d_opt))
    model, opt, sched, disc, d_opt, d_sched = accelerator.prepare(tok, opt, sched, disc, d_opt, d_sched)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    tok_before = {n: p.clone() for n, p in tok.named_parameters()}
    disc_before = [p.clone() for p in disc.parameters()]
    weights = [i for i, (n, _) in enumerate(disc.named_parameters()) if n.endswith("weight")]

    logs = gan_step(accelerator, model, disc, opt, d_opt, sched, d_sched, loss_fn, images, step=0, grad_clip=1.0)
    assert "generator" not in logs and "discriminator" not in logs  # warm-up step
    assert all(torch.equal(a, b) for a, b in zip(disc_before, disc.parameters()))
    changed = [n for n, p in tok.named_parameters() if not torch.equal(p, tok_before[n])]
    assert "decoder.conv_out.weight" in changed and "encoder.conv_in.weight" in changed
    assert "entropy" in logs and logs["grad_norm"] > 0

    logs = gan_step(accelerator, model, disc, opt, d_opt, sched, d_sched, loss_fn, images, step=1, grad_clip=1.0)
    assert {"generator", "adaptive_weight", "discriminator", "logits_real", "logits_fake"} <= set(logs)
    # (the last bias has an exactly zero hinge gradient while every logit is inside the margin)
    assert all(not torch.equal(disc_before[i], list(disc.parameters())[i]) for i in weights)
    assert all(torch.isfinite(v).all() for v in logs.values())
    means = RunningMeans()
    means.add(logs)
    means.add(logs)
    assert means.pop(accelerator)["loss"] == pytest.approx(float(logs["loss"]))


TWINS = {"var-tokenizer-f16": "train-var-tokenizer", "vq-tokenizer-f16": "train-vq-tokenizer",
         "hart-tokenizer-1024": "train-hart-tokenizer"}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_training_configs_load_and_have_tiny_twins(name):
    from pathlib import Path

    configs = Path(__file__).parent.parent / "configs"
    full = TokenizerTrainConfig.from_yaml(configs / "train" / f"{name}.yaml")
    tiny = TokenizerTrainConfig.from_yaml(configs / "tiny" / f"{TWINS[name]}.yaml")
    assert full.tokenizer.quantizer.kind == tiny.tokenizer.quantizer.kind
    assert tiny.tokenizer.image_size == 32 and tiny.loss.perceptual_weight == 0.0  # offline on CPU
    assert full.train.freeze == tiny.train.freeze


def test_bf16_autocast_keeps_quantizer_math_in_fp32():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    try:
        torch.manual_seed(0)
        tok = artok.build_tokenizer("tiny-var-vqvae")
        loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0))
        opt = build_optimizer(tok, lr=1e-3, betas=(0.5, 0.9))
        sched = build_scheduler(opt, schedule="constant", warmup_steps=0, max_steps=10)
        model, opt, sched = accelerator.prepare(tok, opt, sched)
        images = torch.rand(2, 3, 32, 32) * 2 - 1
        out = model(images)
        assert out.reconstruction.dtype == torch.bfloat16  # autocast is on ...
        assert out.losses["commitment"].dtype == torch.float32  # ... and the quantizer computed in fp32
        logs = gan_step(accelerator, model, None, opt, None, sched, None, loss_fn, images, step=0, grad_clip=1.0)
        assert all(torch.isfinite(v).all() for v in logs.values())
        assert tok.quantizer.codebook.weight.dtype == torch.float32
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


class _OneProcess:
    """The few Accelerator members StepClock uses, for a single process without Accelerate."""

    device = torch.device("cpu")
    is_main_process = True

    def reduce(self, tensor, reduction="sum"):
        return tensor


def test_step_clock_cadence_budget_and_resume():
    from artok.training.checkpoint import TrainingState

    state = TrainingState()
    clock = StepClock(_OneProcess(), state, TrainConfig(max_steps=7, log_every=3), resumed=False, progress=False)
    logged = []
    while clock.running:
        last = clock.tick()
        if clock.due(3):
            logged.append((state.step, last))
    assert state.step == 7 and logged == [(3, False), (6, False), (7, True)], "every 3 steps, and the last"
    assert clock.images_per_second(16) > 0 and state.seconds >= 0

    # a time budget already spent stops the run at the next step, which counts as the last
    state = TrainingState()
    state.step, state.seconds = 4, 61.0
    clock = StepClock(_OneProcess(), state, TrainConfig(max_steps=100, max_minutes=1.0), resumed=True, progress=False)
    assert clock.running and clock.saved_at == 4, "a resumed run starts saved at its checkpoint"
    assert clock.tick() and clock.out_of_time and not clock.running and state.step == 5
    assert clock.due(1000)


def test_every_shipped_tokenizer_training_config_loads():
    from pathlib import Path

    configs = Path(__file__).parent.parent / "configs"
    paths = sorted(configs.glob("*/*tokenizer*.yaml"))
    paths = [p for p in paths if p.name.startswith("train-") or p.parent.name == "train"]
    assert len(paths) >= 7, paths
    for path in paths:
        cfg = TokenizerTrainConfig.from_yaml(path)
        assert cfg.train.max_steps > 0, path
    quickstart = TokenizerTrainConfig.from_yaml(configs / "tiny" / "train-quickstart-tokenizer.yaml")
    assert quickstart.tokenizer.quantizer.dead_code_threshold > 0 and quickstart.loss.entropy_weight > 0
