"""Small-image tokenizer options: per-level residual block counts, black padding of small images, the LR
schedule laid over a time budget, per-scale codebook units (scale_norm), prefix (nested) dropout, PSNR after
each prefix of scales, and the Fashion-MNIST recipe config."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artok.config import (ConfigError, ConvEncoderConfig, QuantizerConfig, TokenizerConfig, TokenizerTrainConfig,
                          TrainConfig)
from artok.data import ImageTransform, data_config_from_spec
from artok.encoders.conv import ConvDecoder, ConvEncoder, ResnetBlock
from artok.metrics import evaluate_tokenizer
from artok.metrics.image import psnr
from artok.quantizers import MultiScaleResidualQuantizer
from artok.tokenizers import Tokenizer
from artok.training.optim import BudgetProgress, build_scheduler, lr_factor

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "fashion-mnist-tokenizer.yaml"


def small_config(**quantizer) -> TokenizerConfig:
    return TokenizerConfig(
        image_size=32, latent_channels=8,
        encoder=ConvEncoderConfig(ch=16, ch_mult=(1, 2, 4), level_blocks=(0, 1, 2), attn_levels=(), mid_attn=False,
                                  norm_groups=8),
        quantizer=QuantizerConfig(kind="msrq", codebook_size=32, scales=(1, 2, 4, 8), ema_decay=0.9, **quantizer))


# -- per-level residual blocks --------------------------------------------------------------------------------

def test_level_blocks_skip_full_resolution_blocks():
    enc = ConvEncoder(latent_channels=8, ch=16, ch_mult=(1, 2, 4), level_blocks=(0, 1, 2), attn_levels=(), mid_attn=False,
                      norm_groups=8)
    dec = ConvDecoder(latent_channels=8, ch=16, ch_mult=(1, 2, 4), level_blocks=(0, 1, 2), attn_levels=(), mid_attn=False,
                      norm_groups=8)
    assert [len(level.block) for level in enc.down] == [0, 1, 2]
    assert [len(level.block) for level in dec.up] == [0, 1, 2]
    # nothing but the input and output convs (and the decoder's resampling conv) runs at 32 x 32
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape[-1]
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in [*enc.named_modules(), *dec.named_modules()]
             if isinstance(m, ResnetBlock)]
    x = torch.randn(2, 3, 32, 32)
    z = enc(x)
    assert z.shape == (2, 8, 8, 8)
    assert dec(z).shape == (2, 3, 32, 32)
    for h in hooks:
        h.remove()
    assert seen and max(seen.values()) <= 16
    # the resampling convs change the width: the decoder's 32 px conv runs at the narrow width
    assert dec.up[1].upsample.conv.out_channels == 16 and dec.up[1].upsample.conv.in_channels == 32
    assert enc.down[0].downsample.conv.out_channels == 32 and enc.down[1].downsample.conv.out_channels == 64


def test_level_blocks_default_keeps_the_vqgan_layout():
    a = ConvDecoder(latent_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, norm_groups=8)
    assert [len(level.block) for level in a.up] == [2, 2]  # num_res_blocks + 1 per decoder level
    conv = a.up[1].upsample.conv
    assert conv.in_channels == conv.out_channels == 32  # widths change in the blocks, as in the official keys
    assert "up.0.block.0.nin_shortcut.weight" in a.state_dict()


@pytest.mark.parametrize("bad", [(0, 1), (1, -1, 1)])
def test_level_blocks_bad_counts_are_config_errors(bad):
    with pytest.raises(ConfigError, match="level_blocks"):
        ConvEncoderConfig(ch=16, ch_mult=(1, 2, 4), level_blocks=bad, norm_groups=8)


# -- padding small images -------------------------------------------------------------------------------------

def test_pad_small_centres_the_image_on_black():
    array = np.random.default_rng(0).integers(1, 256, (28, 28, 3), dtype=np.uint8)
    out = ImageTransform(32, pad_small=True)(Image.fromarray(array))
    unit = ((out + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(unit[2:30, 2:30], array)
    assert unit[:2].max() == 0 and unit[30:].max() == 0 and unit[:, :2].max() == 0 and unit[:, 30:].max() == 0
    # without it the image is upscaled; an image of the right size is unchanged either way
    assert not torch.equal(ImageTransform(32)(Image.fromarray(array)), out)
    full = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert torch.equal(ImageTransform(32, pad_small=True)(Image.fromarray(full)), ImageTransform(32)(Image.fromarray(full)))


def test_fashion_mnist_spec_pads():
    assert data_config_from_spec("fashion-mnist").pad_small
    assert not data_config_from_spec("procedural").pad_small


# -- the LR schedule over a time budget -----------------------------------------------------------------------

def test_budget_progress_follows_the_clock():
    budget = BudgetProgress(max_minutes=10, max_steps=10 ** 6, warmup_steps=10)
    budget.update(seconds=5.0, step=10)  # warm-up ended after 5 s
    assert budget() == 0.0
    budget.update(seconds=5.0 + 595.0 / 2, step=40)
    assert budget() == pytest.approx(0.5)
    budget.update(seconds=700.0, step=50)
    assert budget() == 1.0
    # the step budget wins when it ends the run first
    steps = BudgetProgress(max_minutes=10, max_steps=110, warmup_steps=10)
    steps.update(seconds=1.0, step=10)
    steps.update(seconds=2.0, step=60)
    assert steps() == pytest.approx(0.5)


def test_scheduler_decays_by_progress_not_steps():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    budget = BudgetProgress(max_minutes=1, max_steps=10 ** 6, warmup_steps=0)
    sched = build_scheduler(opt, schedule="cosine", warmup_steps=0, max_steps=10 ** 6, min_lr_ratio=0.1,
                            progress=budget)
    for seconds, expected in ((15.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), (60.0, 0.1)):
        budget.update(seconds=seconds, step=1)
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert lr_factor(5, schedule="cosine", warmup_steps=0, max_steps=10, progress=0.5) == pytest.approx(0.5)


def test_schedule_over_minutes_needs_a_time_budget():
    with pytest.raises(ConfigError, match="max_minutes"):
        TrainConfig(schedule_over="minutes")
    with pytest.raises(ConfigError, match="schedule_over"):
        TrainConfig(schedule_over="hours", max_minutes=1)
    assert TrainConfig(schedule_over="minutes", max_minutes=1).schedule_over == "minutes"


# -- per-scale units ------------------------------------------------------------------------------------------

def test_scale_norm_standardises_each_scales_inputs():
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(codebook_size=16, dim=4, scales=(1, 2, 4), ema_decay=0.9, scale_norm=True,
                                    usage_decay=0.5).train()
    f = torch.randn(8, 4, 4, 4) * 3 + torch.tensor([5.0, -2.0, 0.0, 1.0]).view(1, 4, 1, 1)
    q(f)
    means = f.mean((2, 3))  # the 1x1 inputs: one per image
    assert torch.allclose(q.scale_mean[0], means.mean(0), atol=1e-5)
    assert q.scale_std[0] == pytest.approx(float((means - means.mean(0)).square().mean().sqrt()), rel=1e-4)
    q.eval()
    ids = q.quantize(f)
    # scale 0's ids are the nearest codes of the standardised image means
    z = (means - q.scale_mean[0]) / q.scale_std[0]
    assert torch.equal(ids[0][:, 0], torch.cdist(z, q.codebook.weight).argmin(1))
    # and the latent adds mean + std · code
    one = q.ids_to_latent(ids[:1])
    code = q.scale_mean[0] + q.codebook(ids[0][:, 0]) * q.scale_std[0]
    assert torch.allclose(one, q.phi(code.view(8, 4, 1, 1).expand(8, 4, 4, 4).contiguous(), 0), atol=1e-5)
    # eval never updates the units
    before = q.scale_std.clone(), q.scale_mean.clone()
    q(f * 10)
    assert torch.equal(before[0], q.scale_std) and torch.equal(before[1], q.scale_mean)


def test_scale_norm_is_saved_and_reloaded(tmp_path):
    tok = Tokenizer(small_config(scale_norm=True)).train()
    tok(torch.rand(4, 3, 32, 32) * 2 - 1)
    tok.save_pretrained(tmp_path / "t")
    again = Tokenizer.from_pretrained(tmp_path / "t")
    assert torch.equal(again.quantizer.scale_std, tok.quantizer.scale_std)
    assert torch.equal(again.quantizer.scale_mean, tok.quantizer.scale_mean)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    tok.eval()
    assert all(torch.equal(a, b) for a, b in zip(tok.tokenize(x), again.tokenize(x)))


def test_scale_norm_and_prefix_dropout_are_msrq_options():
    with pytest.raises(ConfigError, match="msrq"):
        QuantizerConfig(kind="vq", scales=(4,), scale_norm=True)
    with pytest.raises(ConfigError, match="msrq"):
        QuantizerConfig(kind="hybrid", scales=(1, 2), prefix_dropout=0.1)
    with pytest.raises(ConfigError, match="prefix_dropout"):
        QuantizerConfig(prefix_dropout=1.0)


# -- prefix dropout -------------------------------------------------------------------------------------------

def test_prefix_dropout_decodes_some_images_from_their_first_scales():
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(codebook_size=16, dim=4, scales=(1, 2, 4), ema_decay=0.9,
                                    prefix_dropout=0.9).train()
    f = torch.randn(64, 4, 4, 4, requires_grad=True)
    prefixes = q.cumulative_latents(f.detach())  # f̂ after 1, 2, 3 scales, with the codes before this step
    out = q(f)
    which = []
    for i in range(64):
        match = [k for k, p in enumerate(prefixes) if torch.allclose(out.quantized[i], p[i], atol=1e-5)]
        assert match, f"image {i} is no prefix decoding"
        which.append(match[0])
    assert {0, 1} <= set(which) and which.count(2) < 32  # most images drop, to a random prefix
    out.quantized.sum().backward()
    assert torch.allclose(f.grad, torch.ones_like(f))  # straight-through to the encoder for every image
    q.eval()
    assert torch.allclose(q(f).quantized, q.cumulative_latents(f.detach())[-1], atol=1e-6)  # off outside training


# -- evaluation reports PSNR after each prefix ----------------------------------------------------------------

def test_evaluate_reports_psnr_after_each_prefix():
    torch.manual_seed(0)
    tok = Tokenizer(small_config()).eval()
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    r = evaluate_tokenizer(tok, [{"images": images}], metrics=("psnr", "prefix"), progress=False)
    assert [row["scales"] for row in r["prefix_psnr"]] == [[1], [1, 2], [1, 2, 4], [1, 2, 4, 8]]
    assert r["prefix_psnr"][-1]["psnr"] == pytest.approx(r["psnr"])
    ids = tok.tokenize(images)
    with torch.no_grad():
        two = tok.decode(tok.ids_to_latent(ids[:2]))
    assert r["prefix_psnr"][1]["psnr"] == pytest.approx(float(psnr(two, images).mean()), rel=1e-5)


# -- the recipe ---------------------------------------------------------------------------------------------

def test_fashion_mnist_recipe_loads_and_builds(tmp_path):
    from artok.training.args import load_config

    cfg = load_config(TokenizerTrainConfig, RECIPE, {"data.source": "folder", "data.path": str(tmp_path)})
    assert cfg.tokenizer.image_size == 32 and cfg.tokenizer.quantizer.scales == (1, 2, 4, 8)
    assert cfg.tokenizer.quantizer.codebook_size == 512 and cfg.train.schedule_over == "minutes"
    assert sum(s * s for s in cfg.tokenizer.quantizer.scales) == 85
    assert cfg.data.pad_small  # kept when --data points at a folder
    tok = Tokenizer(cfg.tokenizer)
    assert tok.downsample_factor == 4 and tok.scales == (1, 2, 4, 8)


# -- scale-balanced EMA codes ---------------------------------------------------------------------------------

def test_balance_scales_weights_each_scale_equally_in_the_ema():
    torch.manual_seed(0)
    kw = dict(codebook_size=8, dim=2, scales=(1, 2), ema_decay=0.5, quant_resi=0.0)
    plain = MultiScaleResidualQuantizer(**kw).train()
    balanced = MultiScaleResidualQuantizer(**kw, balance_scales=True).train()
    balanced.load_state_dict(plain.state_dict())
    f = torch.randn(3, 2, 2, 2)
    ids = plain(f).ids
    assert all(torch.equal(a, b) for a, b in zip(ids, balanced(f).ids))
    # 3 images: 3 vectors at 1x1 and 12 at 2x2 enter the counts as 15 raw hits, or 7.5 + 7.5 balanced
    added_plain = (plain.codebook.ema_count - 0.5) / 0.5
    added_balanced = (balanced.codebook.ema_count - 0.5) / 0.5
    assert added_plain.sum() == pytest.approx(15.0)
    assert added_balanced.sum() == pytest.approx(15.0)
    one = torch.bincount(ids[0].flatten(), minlength=8).float()
    two = torch.bincount(ids[1].flatten(), minlength=8).float()
    assert torch.allclose(added_balanced, one * 2.5 + two * 0.625)
    assert torch.equal(plain.codebook.usage, balanced.codebook.usage)  # usage statistics stay raw hits
    with pytest.raises(ConfigError, match="ema_decay"):
        QuantizerConfig(balance_scales=True)


def test_entropy_on_the_first_scales_only():
    from artok.config import LossConfig
    from artok.losses import TokenizerLoss

    torch.manual_seed(0)
    tok = Tokenizer(small_config()).train()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    out = tok(x)
    every = TokenizerLoss(LossConfig(perceptual_weight=0, entropy_weight=1.0)).entropy(out.quantizer_inputs, tok)
    first = TokenizerLoss(LossConfig(perceptual_weight=0, entropy_weight=1.0, entropy_scales=1))
    coarse = first.entropy(out.quantizer_inputs, tok)
    again = TokenizerLoss(LossConfig(perceptual_weight=0, entropy_weight=1.0)).entropy(out.quantizer_inputs[:1], tok)
    assert torch.allclose(coarse, again) and not torch.allclose(coarse, every)
    with pytest.raises(ConfigError, match="entropy_scales"):
        LossConfig(entropy_scales=0)


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_recipe_trains_from_a_png_folder_on_a_time_budget(tmp_path):
    """The recipe from ``--data DIR`` (class folders of 28 px PNGs, padded), ending on its time budget at the
    lowest LR, with PSNR after each prefix in eval.json."""
    import json

    from accelerate.state import AcceleratorState, GradientState

    from artok.cli import main as cli

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(tmp_path / "data" / c / f"{i}.png")
    out = tmp_path / "run"
    try:
        code = cli(["train", "tokenizer", "--config", str(RECIPE), "--data", str(tmp_path / "data"), "--out-dir", str(out),
                    "--no-progress", "--train.max_minutes=0.15", "--train.batch_size=4", "--train.warmup_steps=1",
                    "--train.log_every=1", "--train.eval_images=4", "--train.trackers=[]"])
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] >= 2
    # the cosine is laid over the 9 s, not over the recipe's 10^6 steps: the run ends near its lowest rate
    assert rows[-1]["lr"] < 0.1 * 2e-3
    result = json.loads((out / "eval.json").read_text())
    assert len(result["prefix_psnr"]) == 4 and result["prefix_psnr"][-1]["psnr"] == pytest.approx(result["psnr"])


def test_scale_norm_tokenizer_drives_teacher_forcing_and_sampling():
    """A generator over a scale_norm tokenizer: its teacher inputs are the running latent of the same units,
    and greedy sampling (plain and with soft "more smooth" codes) decodes, the plain one to the tokenizer's
    own latent of the sampled ids."""
    import artok
    from artok.sampling import generate

    torch.manual_seed(0)
    tok = Tokenizer(small_config(scale_norm=True)).train()
    for _ in range(3):
        tok(torch.rand(8, 3, 32, 32) * 2 - 1)  # move the per-scale statistics off their initial values
    tok.eval()
    gen = artok.build_generator("tiny-var", codebook_size=32, latent_channels=8, scales=(1, 2, 4, 8)).eval()
    ids = tok.tokenize(torch.rand(2, 3, 32, 32) * 2 - 1)
    inputs = tok.teacher_inputs(ids)
    f_hat, nxt = tok.autoregressive_step(0, None, ids[0])
    assert torch.allclose(inputs[:, :4], nxt, atol=1e-5)  # the next block's input, in the latent's units
    assert gen(inputs, torch.tensor([1, 2])).shape == (2, 85, 32)
    for smooth in (False, True):
        out = generate(gen, tok, [3, 4], cfg_scale=1.5, top_k=1, more_smooth=smooth,
                       generator=torch.Generator().manual_seed(0))
        assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images).all()
        if not smooth:  # hard codes: the sampler's running latent is the tokenizer's latent of its ids
            assert torch.allclose(out.latent, tok.ids_to_latent(out.ids), atol=1e-4)


@pytest.mark.parametrize("ema", [None, 0.99])
def test_per_scale_straight_through_keeps_the_values_and_lets_the_reconstruction_train_phi(ema):
    torch.manual_seed(0)
    make = lambda mode: MultiScaleResidualQuantizer(codebook_size=32, dim=8, scales=(1, 2, 4), ema_decay=ema,
                                                    scale_norm=True, straight_through=mode)
    glob, per = make("global"), make("per_scale")
    per.load_state_dict(glob.state_dict())
    f = torch.randn(4, 8, 4, 4)
    outs = {}
    for name, q in (("global", glob), ("per_scale", per)):
        q.eval()  # no statistics updates: both see the same codes and units
        latent = f.clone().requires_grad_(True)
        out = q(latent)
        target = torch.randn_like(out.quantized, generator=torch.Generator().manual_seed(1))
        (out.quantized - target).square().mean().backward()  # a reconstruction-like loss on f̂ only
        phi_grad = sum(float(p.grad.abs().sum()) for p in q.phi.parameters() if p.grad is not None)
        outs[name] = (out, latent.grad, phi_grad)
    (g_out, g_grad, g_phi), (p_out, p_grad, p_phi) = outs["global"], outs["per_scale"]
    torch.testing.assert_close(p_out.quantized, g_out.quantized)
    assert all(torch.equal(a, b) for a, b in zip(p_out.ids, g_out.ids))
    assert g_phi == 0.0 and p_phi > 0.0  # only per-scale estimation carries the reconstruction's gradient to φ
    assert p_grad is not None and p_grad.abs().sum() > 0 and not torch.allclose(p_grad, g_grad)


def test_straight_through_is_a_checked_msrq_option():
    with pytest.raises(ConfigError, match="straight_through"):
        QuantizerConfig(kind="msrq", scales=(1, 2), straight_through="per_level").validate()
    with pytest.raises(ConfigError, match="straight_through"):
        QuantizerConfig(kind="vq", scales=(4,), straight_through="per_scale").validate()
    with pytest.raises(ValueError, match="straight_through"):
        MultiScaleResidualQuantizer(codebook_size=8, dim=4, scales=(1, 2), straight_through="nope")


def test_norm_groups_zero_builds_a_plain_residual_conv_body():
    """norm_groups 0: no GroupNorm anywhere; a block is x + conv2(SiLU(conv1(SiLU(x)))), its input untouched
    (no in-place SiLU on a tensor the shortcut still reads), and a tokenizer built so trains."""
    torch.manual_seed(0)
    block = ResnetBlock(8, 8, groups=0)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    kept = x.detach().clone()
    y = block(x)
    assert torch.equal(x.detach(), kept)
    expected = kept + block.conv2(torch.nn.functional.silu(block.conv1(torch.nn.functional.silu(kept))))
    assert torch.allclose(y, expected, atol=1e-6)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    config = small_config()
    config = config.replace(encoder=config.encoder.replace(norm_groups=0))
    tok = Tokenizer(config)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in tok.modules())
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    (out.reconstruction.square().mean() + sum(out.losses.values())).backward()
    assert all(torch.isfinite(p.grad).all() for p in tok.encoder.parameters() if p.grad is not None)
    with pytest.raises(ConfigError, match="norm_groups must be >= 0"):
        ConvEncoderConfig(ch=16, ch_mult=(1, 2), norm_groups=-1).validate()
