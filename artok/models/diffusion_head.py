"""HART's residual diffusion head: MAR's ``SimpleMLPAdaLN`` denoiser (Li et al., 2024, arXiv 2406.11838)
conditioned on the transformer's hidden state, trained and sampled with ``artok.diffusion``.

The head models the continuous residual token r (C channels) of one latent position given a condition
vector z (the transformer's hidden state there). The network sees r / ``latent_scale`` (HART's vae_scale 0.6)
and predicts ε and the variance interpolation v; ``sample`` runs the respaced chain (8 steps) with
classifier-free guidance and a temperature and returns r. Keys follow the official ``diffloss.*`` layout
(docs/reference-behaviour.md 5.5), so converted checkpoints load with a prefix strip.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from artok.config import DiffusionHeadConfig
from artok.schedulers import ResidualDiffusion


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """[cos(t·f), sin(t·f)] with f_i = 10000^(−i/128), then Linear → SiLU → Linear (DiT)."""

    def __init__(self, width: int, frequency_size: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_size, self.max_period = frequency_size, max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_size, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (N,) timesteps → (N, width)."""
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, frequency_size), cos first
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """x + gate · MLP(LN(x)·(1 + scale) + shift), (shift, scale, gate) from SiLU(y)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    """Linear(LN_no_affine(x)·(1 + scale) + shift) → (N, 2C)."""

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """MAR's denoiser: ``net(x (N, C), t (N,), c (N, D)) -> (N, 2C)`` = [ε, v]."""

    def __init__(self, *, channels: int, condition_dim: int, width: int, depth: int) -> None:
        super().__init__()
        self.channels = channels
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(condition_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_layer = FinalLayer(width, 2 * channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(t) + self.cond_embed(c)  # (N, width)
        x = self.input_proj(x)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Guided output for a batch of cond rows then null rows: both halves run on x[:N/2] and share
        ε = (1 + s)·ε_cond − s·ε_null (HART's form); each half keeps its own v."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, c)
        eps, rest = out[:, : self.channels], out[:, self.channels:]
        cond_eps, null_eps = eps.chunk(2)
        guided = (1 + cfg_scale) * cond_eps - cfg_scale * null_eps
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)


class DiffusionHead(nn.Module):
    """The residual diffusion head (HART's ``DiffLoss``): network, training loss and sampler.

    ``head(x, t, condition) -> (N, 2C)`` is the raw network; ``head.loss(target, condition)`` the training
    loss; ``head.sample(condition, cfg_scale=…)`` draws residuals.
    """

    def __init__(self, config: DiffusionHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = SimpleMLPAdaLN(channels=config.latent_channels, condition_dim=config.condition_dim,
                                  width=config.width, depth=config.depth)
        with torch.device("cpu"):  # schedule tables (not parameters), also when the module is built on meta
            self.diffusion = ResidualDiffusion(num_train_timesteps=config.num_train_timesteps,
                                               num_sampling_steps=config.num_sampling_steps)
        self.init_weights()

    @property
    def channels(self) -> int:
        return self.config.latent_channels

    @torch.no_grad()
    def init_weights(self) -> None:
        """MAR's init: Xavier-uniform linears with zero biases, N(0, 0.02) time embedding, and zero AdaLN
        modulations and output layer, so each block starts as the identity and the output at zero."""
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for layer in (self.net.time_embed.mlp[0], self.net.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.net.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        final = self.net.final_layer
        for layer in (final.adaLN_modulation[-1], final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check(self, condition: torch.Tensor, x: torch.Tensor | None = None) -> None:
        D, C = self.config.condition_dim, self.channels
        if condition.ndim != 2 or condition.shape[1] != D:
            raise ValueError(f"condition must be (N, {D}), got {tuple(condition.shape)}")
        if x is not None and (x.ndim != 2 or x.shape != (condition.shape[0], C)):
            raise ValueError(f"x must be (N, {C}) = ({condition.shape[0]}, {C}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x: (N, C) noisy residual (diffusion scale); t: (N,) int timesteps of the 1000-step schedule;
        condition: (N, D). Returns (N, 2C): ε, then the variance interpolation v."""
        self._check(condition, x)
        return self.net(x, t, condition)

    def loss(self, target: torch.Tensor, condition: torch.Tensor, *, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training loss of residual targets (N, C) (latent scale, divided by ``latent_scale`` here) given
        conditions (N, D). t ~ U{0..T−1} and ε ~ N(0, 1) unless given. Returns per-sample (N,) ``loss`` =
        ``mse`` + ``vb``."""
        self._check(condition, target)
        if t is None:
            t = torch.randint(0, self.config.num_train_timesteps, (target.shape[0],), device=target.device)
        x0 = target / self.config.latent_scale
        return self.diffusion.training_losses(lambda x_t, tt: self.net(x_t, tt, condition), x0, t, noise)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, *, cfg_scale: float, temperature: float = 1.0,
               noise: tuple[torch.Tensor, torch.Tensor] | None = None, guided: bool | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw residuals (N, C), in the latent's scale, for conditions (N, D).

        With guidance, ``condition`` holds N/2 cond rows then N/2 null rows; both halves share the guided ε
        and start from the same noise, and HART uses the first half. ``guided`` None follows HART (docs/reference-behaviour.md
        Q3): guidance unless ``cfg_scale == 1.0`` exactly.

        noise: (initial, per_step) to inject: initial (N, C), or (N/2, C) duplicated under guidance;
        per_step (S, N, C) in sampling order, or (S, N/2, C) under guidance, when the null half, which
        never feeds back into the cond half, gets no noise. Drawn from ``generator`` when None.
        """
        self._check(condition)
        N, C = condition.shape[0], self.channels
        guided = (cfg_scale != 1.0) if guided is None else guided
        if guided and N % 2:
            raise ValueError(f"guided sampling needs cond rows then null rows (an even count), got {N} conditions")
        steps = self.diffusion.timesteps
        rows0 = N // 2 if guided else N
        if noise is None:  # drawn on the generator's device (a CPU generator serves any model device)
            where = dict(generator=generator, dtype=condition.dtype,
                         device=generator.device if generator is not None else condition.device)
            init = torch.randn(rows0, C, **where).to(condition.device)
            per_step = torch.randn(len(steps), N, C, **where).to(condition.device)
        else:
            init, per_step = noise
            if tuple(init.shape) not in {(rows0, C), (N, C)} or per_step.ndim != 3 or per_step.shape[0] != len(steps) \
                    or tuple(per_step.shape[1:]) not in {(N, C), (rows0, C)}:
                raise ValueError(f"noise must be (initial ({rows0}, {C}), per_step ({len(steps)}, {N}, {C})), got "
                                 f"({tuple(init.shape)}, {tuple(per_step.shape)})")
            if per_step.shape[1] != N:  # the null half's own noise cannot change the cond half
                per_step = torch.cat([per_step, torch.zeros_like(per_step)], dim=1)
        x = torch.cat([init, init]) if guided and init.shape[0] != N else init
        for k, t in enumerate(steps.tolist()):
            tt = torch.full((N,), t, dtype=torch.long, device=condition.device)
            out = self.net.forward_with_cfg(x, tt, condition, cfg_scale) if guided else self.net(x, tt, condition)
            x, _ = self.diffusion.step(out, t, x, noise=per_step[k], temperature=temperature)
        return x * self.config.latent_scale
