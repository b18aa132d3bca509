"""HART's residual diffusion head and its diffusers-based diffusion: parity with the official DiffLoss
(fixtures/hart/diffhead.*), the schedule, diffusers' DDPMScheduler.step, sampling properties, bad input."""
from unittest import mock

import diffusers.schedulers.scheduling_ddpm as ddpm
import pytest
import torch

from artok import convert
from artok.config import DiffusionHeadConfig
from artok.schedulers import ResidualDiffusion, respaced_timesteps
from artok.models.diffusion_head import DiffusionHead
from conftest import assert_close, fixture_weights, load_fixture


@pytest.fixture(scope="module")
def fixture():
    io, meta = load_fixture("hart/diffhead")
    return convert.hart_diffusion_head(fixture_weights("hart/diffhead")), io, meta


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    head = DiffusionHead(DiffusionHeadConfig(latent_channels=8, condition_dim=32, width=32, depth=2))
    for p in head.parameters():  # MAR's init zeroes the output; give every layer an effect
        torch.nn.init.normal_(p, std=0.2)
    return head.eval()


# -- parity ---------------------------------------------------------------------------------------------

def test_inferred_config(fixture):
    head, _, meta = fixture
    c, k = head.config, meta["constructor"]
    assert (c.latent_channels, c.condition_dim, c.width, c.depth) == (
        k["target_channels"], k["z_channels"], k["width"], k["depth"])
    assert c.num_sampling_steps == int(k["num_sampling_steps"]) and c.latent_scale == meta["fixed_internals"]["vae_scale"]


def test_schedule_tables(fixture):
    head, io, _ = fixture
    d = head.diffusion
    assert d.timesteps.tolist() == io["sched_gen_timestep_map"].flip(0).tolist()
    assert respaced_timesteps(1000, 8) == io["sched_gen_timestep_map"].tolist()
    assert_close(d.train_scheduler.betas, io["sched_train_betas"], atol=1e-15, rtol=0, what="training betas")
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod"):
        assert_close(d.sample_tables.tables[name], io[f"sched_gen_{name}"], atol=1e-12, rtol=1e-9, what=name)
    ac = io["sched_gen_alphas_cumprod"]
    assert_close(d.sample_tables.tables["alphas_cumprod"], ac, atol=0, rtol=1e-9, what="ᾱ (relative)")


def test_network_and_guidance(fixture):
    head, io, _ = fixture
    with torch.no_grad():
        assert_close(head(io["net_x"], io["net_t"], io["net_c"]), io["net_out"], what="net_out")
        assert_close(head.net.forward_with_cfg(io["cfg_x"], io["cfg_t"], io["cfg_c"], 2.5), io["cfg_out"], what="cfg_out")


def test_training_losses(fixture):
    head, io, _ = fixture
    with torch.no_grad():
        losses = head.loss(io["tl_target"], io["tl_c"], t=io["tl_t"], noise=io["tl_noise"])
    for name in ("loss", "mse", "vb"):
        assert_close(losses[name], io[f"tl_{name}"], what=f"tl_{name}")


def test_sampling_with_recorded_noise(fixture):
    head, io, meta = fixture
    out = head.sample(io["sample_cfg_z"], cfg_scale=meta["cfg_scale"],
                      noise=(io["sample_cfg_init_noise"], io["sample_cfg_step_noise"]))
    assert_close(out, io["sample_cfg_out"], what="sample_cfg_out")
    out = head.sample(io["sample_nocfg_z"], cfg_scale=1.0, temperature=0.7,
                      noise=(io["sample_nocfg_init_noise"], io["sample_nocfg_step_noise"]))
    assert_close(out, io["sample_nocfg_out"], what="sample_nocfg_out (cfg 1.0 switches guidance off, Q3)")


def test_sampling_trajectory(fixture):
    head, io, meta = fixture
    z, noise = io["sample_cfg_z"], io["sample_cfg_step_noise"]
    x = torch.cat([io["sample_cfg_init_noise"]] * 2)
    with torch.no_grad():
        for k, t in enumerate(head.diffusion.timesteps.tolist()):
            out = head.net.forward_with_cfg(x, torch.full((12,), t), z, meta["cfg_scale"])
            x, x0 = head.diffusion.step(out, t, x, noise=noise[k])
            assert_close(x, io["sample_cfg_traj"][k], what=f"trajectory step {k}")
            assert_close(x0, io["sample_cfg_traj_pred_xstart"][k], what=f"x̂0 step {k}")


def test_step_equals_diffusers_ddpm_step(fixture):
    """artok's step is DDPMScheduler.step (learned_range, clip_sample) with the caller's noise."""
    head, io, _ = fixture
    d = head.diffusion
    x = io["sample_cfg_traj"][2]
    z = io["sample_cfg_z"]
    for k, t in enumerate(d.timesteps.tolist()):
        with torch.no_grad():
            out = head.net(x, torch.full((12,), t), z)
        noise = io["sample_cfg_step_noise"][k]
        ours, ours_x0 = d.step(out, t, x, noise=noise)
        with mock.patch.object(ddpm, "randn_tensor", lambda *a, **kw: noise):
            theirs = d.sample_scheduler.step(out, t, x)
        assert_close(ours, theirs.prev_sample, atol=2e-5, rtol=1e-5, what=f"step at t={t}")
        assert_close(ours_x0, theirs.pred_original_sample, atol=2e-5, rtol=1e-5, what=f"x̂0 at t={t}")


# -- properties -----------------------------------------------------------------------------------------

def test_sampling_is_seeded_and_guided_halves_share_noise(tiny):
    z = torch.randn(6, 32)
    a = tiny.sample(z, cfg_scale=2.0, generator=torch.Generator().manual_seed(1))
    b = tiny.sample(z, cfg_scale=2.0, generator=torch.Generator().manual_seed(1))
    c = tiny.sample(z, cfg_scale=2.0, generator=torch.Generator().manual_seed(2))
    assert a.shape == (6, 8) and torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)
    # guidance changes the first half; with identical cond and null rows it is a no-op
    same = torch.cat([z[:3], z[:3]])
    g = tiny.sample(same, cfg_scale=3.0, noise=(torch.ones(3, 8) * 0.1, torch.zeros(8, 6, 8)))
    u = tiny.sample(same[:3], cfg_scale=3.0, guided=False, noise=(torch.ones(3, 8) * 0.1, torch.zeros(8, 3, 8)))
    assert_close(g[:3], u, atol=1e-5, what="guidance with cond == null")


def test_temperature_zero_is_deterministic(tiny):
    z = torch.randn(4, 32)
    a = tiny.sample(z, cfg_scale=1.0, temperature=0.0, noise=(torch.zeros(4, 8), torch.randn(8, 4, 8)))
    b = tiny.sample(z, cfg_scale=1.0, temperature=0.0, noise=(torch.zeros(4, 8), torch.randn(8, 4, 8)))
    assert torch.equal(a, b)


def test_loss_trains_every_parameter(tiny):
    tiny.train()
    losses = tiny.loss(torch.randn(16, 8) * 0.3, torch.randn(16, 32))
    assert losses["loss"].shape == (16,) and torch.isfinite(losses["loss"]).all()
    losses["loss"].mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny.parameters())


def test_mar_init_starts_at_zero_output():
    head = DiffusionHead(DiffusionHeadConfig(latent_channels=4, condition_dim=8, width=16, depth=2))
    out = head(torch.randn(3, 4), torch.tensor([0, 500, 999]), torch.randn(3, 8))
    assert torch.equal(out, torch.zeros(3, 8))


def test_float32_schedule_is_what_diffusers_builds():
    fp32 = ResidualDiffusion(float64_schedule=False)
    assert fp32.train_scheduler.alphas_cumprod.dtype == torch.float32
    ours = ResidualDiffusion()
    rel = ((fp32.train_scheduler.alphas_cumprod.double() - ours.train_scheduler.alphas_cumprod).abs()
           / ours.train_scheduler.alphas_cumprod)
    assert 1e-7 < rel.max() < 1e-4  # the difference the float64 tables remove (see artok/diffusion.py)


# -- bad input ------------------------------------------------------------------------------------------

def test_bad_input(tiny):
    with pytest.raises(ValueError, match=r"condition must be \(N, 32\), got \(4, 16\)"):
        tiny.sample(torch.randn(4, 16), cfg_scale=1.0)
    with pytest.raises(ValueError, match=r"\(an even count\), got 3 conditions"):
        tiny.sample(torch.randn(3, 32), cfg_scale=2.0)
    with pytest.raises(ValueError, match=r"noise must be"):
        tiny.sample(torch.randn(4, 32), cfg_scale=1.0, noise=(torch.zeros(4, 8), torch.zeros(7, 4, 8)))
    with pytest.raises(ValueError, match=r"x must be \(N, 8\)"):
        tiny(torch.randn(4, 7), torch.zeros(4, dtype=torch.long), torch.randn(4, 32))
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, 999\], got \[0, 1000\]"):
        tiny.loss(torch.randn(2, 8), torch.randn(2, 32), t=torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="timestep 500 is not in the sampling chain"):
        tiny.diffusion.step(torch.randn(2, 16), 500, torch.randn(2, 8), noise=torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"num_sampling_steps must be in \[1, 1000\], got 0"):
        respaced_timesteps(1000, 0)
