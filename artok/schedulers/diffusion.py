"""Gaussian diffusion for HART's residual head, as thin glue over diffusers' ``DDPMScheduler``.

The process is IDDPM's (Nichol & Dhariwal, 2021, arXiv 2102.09672): the 1000-step cosine schedule,
ε-prediction with a learned-range variance (the network also outputs v, and log σ² = ½(v+1)·log β +
(1 − ½(v+1))·log σ̃²), training loss MSE + the variational bound, and sampling respaced to a few steps (8 in
HART) with x̂0 clipped to [−1, 1] (docs/reference-behaviour.md 5.5).

diffusers supplies the scheduler (``DDPMScheduler`` with the cosine "squaredcos_cap_v2" schedule, learned-range
variance and x̂0 clipping): ``add_noise`` for training and the respaced timesteps (``set_timesteps(timesteps=…)``).
Two details of diffusers differ from the reference numerically; we take the reference's path (measured by
``benchmarks/hart_diffusion_vs_diffusers.py`` on the fixtures):

- diffusers builds the schedule in float32 (ᾱ off by up to 1.3e-5 relative at t = 999; the 8-step samples
  move by 8.7e-5), the reference computes every table in float64 and casts the indexed coefficient to
  float32 (5e-6 from the fixtures). We install float64 tables in the schedulers.
- diffusers' learned-range minimum at the first step is log(1e-20) = −46.05 (the posterior variance is 0
  there); the reference clips it to the next step's value (−10.73 on the 1000-step chain). This changes the
  vb term at t = 0, never sampling, where the last step adds no noise.

HART injects the sampling noise (for reproducibility) and scales it by a temperature, which
``DDPMScheduler.step`` cannot take (it draws its own), so ``step`` recomposes the same update from the
float64 tables: x̂0 = √(1/ᾱ)·x − √(1/ᾱ − 1)·ε clipped to [−1, 1], μ = c1·x̂0 + c2·x, and the learned-range σ.
A test checks that it equals ``DDPMScheduler.step`` given the same noise.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------------------


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """IDDPM's cosine schedule in float64: β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999),
    ᾱ(t) = cos²((t + 0.008)/1.008 · π/2). diffusers' ``squaredcos_cap_v2`` is the same formula in float32."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)], dtype=np.float64)


def respaced_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """IDDPM's ``space_timesteps(T, "n")`` with one section: n steps evenly strided over [0, T−1], stride
    accumulated in float and rounded half-to-even as Python does. Ascending; n = 8 → [0, 143, …, 856, 999]."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_sampling_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    stride = 1.0 if num_steps <= 1 else (num_train_timesteps - 1) / (num_steps - 1)
    steps, at = [], 0.0
    for _ in range(num_steps):
        steps.append(round(at))
        at += stride
    return steps


class ScheduleTables:
    """IDDPM's per-step float64 tables for a chain of timesteps ``s_0 < … < s_{n−1}`` (all 1000 for
    training, the respaced ones for sampling), indexed by the *position* j in the chain."""

    def __init__(self, alphas_cumprod: np.ndarray, timesteps: list[int]) -> None:
        ac = alphas_cumprod[np.asarray(timesteps)]
        ac_prev = np.append(1.0, ac[:-1])
        betas = 1.0 - ac / ac_prev  # respacing: β_j = 1 − ᾱ_{s_j}/ᾱ_{s_{j−1}}
        posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        tables = {
            "alphas_cumprod": ac,
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
            "posterior_variance": posterior_variance,
            # log σ̃² with the 0 at the first step replaced by the next step's value (as IDDPM clips it)
            "posterior_log_variance_clipped": np.log(np.append(posterior_variance[1], posterior_variance[1:]))
            if len(ac) > 1 else np.log(np.maximum(posterior_variance, 1e-20)),
            "log_betas": np.log(betas),
            "betas": betas,
        }
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        self.tables = {k: torch.from_numpy(v.astype(np.float64)) for k, v in tables.items()}

    def __call__(self, name: str, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at chain positions ``index`` (N,), cast to float32 and broadcast against ``like``."""
        v = self.tables[name].to(index.device)[index].to(like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------------------------------------------------
# Losses (IDDPM's normal KL and discretized Gaussian likelihood, in bits)
# ---------------------------------------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales) -> torch.Tensor:
    """log-likelihood of x ∈ [−1, 1] under a Gaussian discretized to 256 bins (IDDPM), elementwise."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


# ---------------------------------------------------------------------------------------------------------
# The diffusion process
# ---------------------------------------------------------------------------------------------------------


class ResidualDiffusion:
    """Training and respaced sampling of an ε/v-predicting network (``model(x, t) -> (N, 2C)``).

    Args:
        num_train_timesteps: T of the training chain (1000).
        num_sampling_steps: length of the respaced sampling chain (HART: 8).
        float64_schedule: install the reference's float64 ᾱ in the diffusers schedulers (default; False
            keeps diffusers' float32 schedule, for measuring the difference).
    """

    def __init__(self, *, num_train_timesteps: int = 1000, num_sampling_steps: int = 8,
                 float64_schedule: bool = True) -> None:
        self.num_train_timesteps, self.num_sampling_steps = num_train_timesteps, num_sampling_steps
        kwargs = dict(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                      variance_type="learned_range", prediction_type="epsilon", clip_sample=True,
                      clip_sample_range=1.0)
        from diffusers import DDPMScheduler  # imported here: diffusers takes seconds to import

        self.train_scheduler = DDPMScheduler(**kwargs)
        self.sample_scheduler = DDPMScheduler(**kwargs)
        steps = respaced_timesteps(num_train_timesteps, num_sampling_steps)
        self.sample_scheduler.set_timesteps(timesteps=steps[::-1])
        if float64_schedule:
            betas = torch.from_numpy(cosine_betas(num_train_timesteps))
            for s in (self.train_scheduler, self.sample_scheduler):
                s.betas, s.alphas = betas, 1.0 - betas
                s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
                s.one = torch.tensor(1.0, dtype=torch.float64)
        alphas_cumprod = self.train_scheduler.alphas_cumprod.double().numpy()
        self.train_tables = ScheduleTables(alphas_cumprod, list(range(num_train_timesteps)))
        self.sample_tables = ScheduleTables(alphas_cumprod, steps)

    # -- training -----------------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε (diffusers' ``add_noise``); t: (N,) training timesteps."""
        return self.train_scheduler.add_noise(x0, noise, t)

    def training_losses(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """IDDPM's ``training_losses`` for ε-prediction with learned-range variance and MSE loss.

        model: callable (x_t, t) → (N, 2C). x0: (N, C) in the diffusion's scale; t: (N,) int64 in
        [0, T). Returns per-sample (N,) tensors: ``mse`` (ε), ``vb`` (the variational bound in bits with the
        mean's gradient stopped; the discretized-Gaussian NLL at t = 0) and ``loss`` = mse + vb.
        """
        if t.ndim != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must be (N,) = ({x0.shape[0]},), got {tuple(t.shape)}")
        if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
            raise ValueError(f"timesteps must be in [0, {self.num_train_timesteps - 1}], got [{int(t.min())}, {int(t.max())}]")
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.add_noise(x0, noise, t)
        out = model(x_t, t)
        C = x0.shape[1]
        if out.shape != (*x0.shape[:-1], 2 * C):
            raise ValueError(f"model output must be (N, 2C) = {(*x0.shape[:-1], 2 * C)}, got {tuple(out.shape)}")
        eps, v = out[:, :C], out[:, C:]
        tab = self.train_tables
        # the vb term trains only the variance: the mean comes from a detached ε
        mean, log_variance, _ = self._p_mean_variance(tab, eps.detach(), v, x_t, t, clip=False)
        true_mean = tab("posterior_mean_coef1", t, x_t) * x0 + tab("posterior_mean_coef2", t, x_t) * x_t
        true_log_variance = tab("posterior_log_variance_clipped", t, x_t)
        kl = _mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, means=mean, log_scales=0.5 * log_variance)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        mse = _mean_flat((noise - eps) ** 2)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    # -- sampling -----------------------------------------------------------------------------------------
    @property
    def timesteps(self) -> torch.Tensor:
        """The respaced timesteps in sampling order, descending (the network is called with these)."""
        return self.sample_scheduler.timesteps

    def step(self, model_output: torch.Tensor, timestep: int, x: torch.Tensor, *, noise: torch.Tensor | None,
             temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step of the respaced chain: x_prev = μ(x̂0, x) + [t > 0]·σ·temperature·noise, with
        x̂0 clipped to [−1, 1] (HART's ``clip_denoised=True``). model_output: (N, 2C) at ``timestep`` (one of
        ``timesteps``); noise: (N, C) (unused, may be None, at the last step). Returns (x_prev, x̂0)."""
        matches = (self.sample_tables.timesteps == int(timestep)).nonzero()
        if matches.numel() == 0:
            raise ValueError(f"timestep {int(timestep)} is not in the sampling chain {self.timesteps.tolist()}")
        j = matches[0].expand(x.shape[0]).to(x.device)
        C = x.shape[1]
        mean, log_variance, x0 = self._p_mean_variance(self.sample_tables, model_output[:, :C], model_output[:, C:],
                                                       x, j, clip=True)
        if int(j[0]) == 0:
            return mean, x0
        if noise is None:
            raise ValueError(f"step at timestep {int(timestep)} needs noise of shape {tuple(x.shape)}")
        return mean + torch.exp(0.5 * log_variance) * noise * temperature, x0

    @staticmethod
    def _p_mean_variance(tab: ScheduleTables, eps, v, x_t, j, *, clip: bool):
        """(posterior mean, learned-range log variance, x̂0) at chain positions j."""
        x0 = tab("sqrt_recip_alphas_cumprod", j, x_t) * x_t - tab("sqrt_recipm1_alphas_cumprod", j, x_t) * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = tab("posterior_mean_coef1", j, x_t) * x0 + tab("posterior_mean_coef2", j, x_t) * x_t
        min_log = tab("posterior_log_variance_clipped", j, x_t)
        max_log = tab("log_betas", j, x_t)
        frac = (v + 1) / 2  # v ∈ [−1, 1] interpolates log σ̃² … log β
        return mean, frac * max_log + (1 - frac) * min_log, x0
