"""How far diffusers' ``DDPMScheduler`` is from HART's reference diffusion (IDDPM), on the fixture
``hart/diffhead.*``: schedule tables, the full 8-step sampling runs with the recorded noise, and the training
losses. Prints a markdown table of max abs differences.

    python benchmarks/hart_diffusion_vs_diffusers.py [--fixtures tests/fixtures]

Rows:
- ``artok``: artok's path (diffusers' scheduler with the reference's float64 tables, IDDPM's clipped variance).
- ``diffusers fp32 schedule``: the same with diffusers' own float32 ᾱ.
- ``DDPMScheduler.step``: diffusers' own step (its noise draw replaced by the recorded noise), float32 or
  float64 ᾱ.
- the training vb term at t = 0 with diffusers' learned-range minimum (log 1e-20, as ``_get_variance``
  computes it) instead of IDDPM's clipped log variance.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import load_file

import diffusers.schedulers.scheduling_ddpm as ddpm
from artok import convert
from artok.schedulers import ResidualDiffusion


def maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def run_diffusers_step(head, diffusion: ResidualDiffusion, z, cfg, temperature, init, per_step):
    """HART's sampling loop with diffusers' ``DDPMScheduler.step``; its internal randn returns our noise
    (scaled by the temperature, which diffusers has no argument for)."""
    N = z.shape[0]
    guided = cfg != 1.0
    x = torch.cat([init, init]) if guided else init
    sched = diffusion.sample_scheduler
    for k, t in enumerate(sched.timesteps.tolist()):
        tt = torch.full((N,), t, dtype=torch.long)
        out = head.net.forward_with_cfg(x, tt, z, cfg) if guided else head.net(x, tt, z)
        noise = per_step[k] * temperature
        with mock.patch.object(ddpm, "randn_tensor", lambda *a, **k: noise):
            x = sched.step(out, t, x).prev_sample
    return x * head.config.latent_scale


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(Path(__file__).parent.parent / "tests" / "fixtures"))
    fx = Path(ap.parse_args().fixtures) / "hart"
    io = load_file(str(fx / "diffhead_io.safetensors"))
    head = convert.hart_diffusion_head(fx / "diffhead_state_dict.safetensors")
    fp32 = ResidualDiffusion(float64_schedule=False)
    ref_ac = io["sched_gen_alphas_cumprod"]
    rows = ["| quantity | artok (fp64 tables) | diffusers fp32 schedule |", "|---|---|---|"]
    steps = io["sched_gen_timestep_map"]
    rows.append(f"| ᾱ at the 8 respaced steps (relative) | "
                f"{((head.diffusion.train_scheduler.alphas_cumprod[steps] - ref_ac).abs() / ref_ac).max():.2e} | "
                f"{((fp32.train_scheduler.alphas_cumprod[steps].double() - ref_ac).abs() / ref_ac).max():.2e} |")
    rows.append(f"| 1000 training betas | {maxabs(head.diffusion.train_scheduler.betas, io['sched_train_betas']):.2e} | "
                f"{maxabs(fp32.train_scheduler.betas, io['sched_train_betas']):.2e} |")

    runs = {
        "sample, cfg 2.5": (io["sample_cfg_z"], 2.5, 1.0, io["sample_cfg_init_noise"], io["sample_cfg_step_noise"],
                            io["sample_cfg_out"]),
        "sample, no cfg, temperature 0.7": (io["sample_nocfg_z"], 1.0, 0.7, io["sample_nocfg_init_noise"],
                                            io["sample_nocfg_step_noise"], io["sample_nocfg_out"]),
    }
    for name, (z, cfg, temp, init, per_step, expected) in runs.items():
        ours = head.sample(z, cfg_scale=cfg, temperature=temp, noise=(init, per_step))
        diffusion = head.diffusion
        head.diffusion = fp32
        ours32 = head.sample(z, cfg_scale=cfg, temperature=temp, noise=(init, per_step))
        head.diffusion = diffusion
        rows.append(f"| {name}: artok's step | {maxabs(ours, expected):.2e} | {maxabs(ours32, expected):.2e} |")
        d64 = run_diffusers_step(head, head.diffusion, z, cfg, temp, init, per_step)
        d32 = run_diffusers_step(head, fp32, z, cfg, temp, init, per_step)
        rows.append(f"| {name}: `DDPMScheduler.step` | {maxabs(d64, expected):.2e} | {maxabs(d32, expected):.2e} |")

    tl = head.loss(io["tl_target"], io["tl_c"], t=io["tl_t"], noise=io["tl_noise"])
    rows.append(f"| training loss (6 timesteps incl. t = 0) | {maxabs(tl['loss'], io['tl_loss']):.2e} | |")
    # diffusers' learned-range variance takes log(max(σ̃², 1e-20)) as its minimum: at t = 0 that is log 1e-20
    # instead of IDDPM's clipped value. The same training loss with that minimum:
    tables = head.diffusion.train_tables.tables
    clipped = tables["posterior_log_variance_clipped"].clone()
    tables["posterior_log_variance_clipped"][0] = math.log(1e-20)
    try:
        theirs = head.loss(io["tl_target"], io["tl_c"], t=io["tl_t"], noise=io["tl_noise"])
    finally:
        tables["posterior_log_variance_clipped"] = clipped
    t0 = io["tl_t"] == 0
    rows.append(f"| training vb at t = 0, diffusers' learned-range minimum (log 1e-20) | "
                f"{maxabs(theirs['vb'][t0], io['tl_vb'][t0]):.2e} ({theirs['vb'][t0].item():.3g} vs reference "
                f"{io['tl_vb'][t0].item():.3g} bits) | |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
