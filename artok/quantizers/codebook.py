"""A codebook for vector quantisation: nearest-code lookup, EMA updates, dead-code restart, usage statistics.

Shared by the single-scale VQ and VAR's multi-scale residual quantiser. Distances are computed in fp32
even under autocast. Training statistics are gathered once per forward and reduced across processes in a
single collective (``update``), so every process applies the same EMA step and the same restarts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from artok.quantizers.sync import DEFAULT_SYNC, ProcessSync


class Codebook(nn.Module):
    """``codebook_size`` vectors of size ``dim``.

    Args:
        l2_norm: choose codes by cosine similarity instead of Euclidean distance.
        ema_decay: if set, the codes are updated as an exponential moving average of the vectors assigned
            to them (VQ-VAE-2) instead of by gradient.
        dead_code_threshold: a code is dead when, at every scale, its running hit count is below this
            fraction of a uniform share of that scale's tokens (the scale's tokens per step / V, summed over
            processes). Dead codes restart from encoder vectors of the current batch, drawn from the scales
            that use the fewest codes (see ``_restart_dead``). 0 disables. The criterion is per scale because
            a coarse scale has few tokens: a code serving only the 1x1 scale is hit rarely yet is alive.
        num_scales: rows of the per-scale usage statistic.
        usage_decay: decay of the running hit counts.
    """

    def __init__(
        self,
        *,
        codebook_size: int,
        dim: int,
        l2_norm: bool = False,
        ema_decay: float | None = None,
        dead_code_threshold: float = 0.0,
        num_scales: int = 1,
        usage_decay: float = 0.99,
        sync: ProcessSync | None = None,
    ) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.l2_norm, self.ema_decay = l2_norm, ema_decay
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.sync = sync or DEFAULT_SYNC
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        # running hit count per scale and code, per training step, summed over processes (VAR's ema_vocab_hit_SV)
        self.register_buffer("usage", torch.zeros(num_scales, codebook_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        if ema_decay is not None:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("ema_count", torch.ones(codebook_size))
            self.register_buffer("ema_sum", self.embedding.weight.detach().clone())
        self.restarted_last_update = 0

    # -- lookup -------------------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for each row. z: (N, dim) → (N,) int64, computed in fp32."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            e = self.embedding.weight.detach().float()
            if self.l2_norm:
                return torch.argmax(F.normalize(z, dim=-1) @ F.normalize(e, dim=-1).T, dim=1)
            # ‖z‖² + ‖e‖² − 2 z·eᵀ, in the order VAR computes it so that near-ties resolve identically
            d = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(e.square(), dim=1, keepdim=False)
            d.addmm_(z, e.T, alpha=-2, beta=1)
            return torch.argmin(d, dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``ids``: (...) → (..., dim)."""
        return self.embedding(ids)

    # -- training statistics ------------------------------------------------------------------------------
    def update(self, hits: torch.Tensor, assigned_sum: torch.Tensor | None,
               candidates: torch.Tensor | list[torch.Tensor], *, scale_weights: torch.Tensor | None = None) -> None:
        """Apply one training step of statistics, identically on every process.

        hits: (num_scales, V) hit counts of this step; assigned_sum: (V, dim) sum of the vectors assigned to
        each code (needed for EMA updates); candidates: the vectors each scale quantised this step, one
        (N_s, dim) tensor per scale (or one tensor for a single scale), to restart dead codes from.
        scale_weights: (num_scales,) weight of each scale's hits in the EMA counts; ``assigned_sum`` must
        then hold the same weighting of the vectors (see ``MultiScaleResidualQuantizer(balance_scales)``).
        The usage statistics and restarts always use the raw hits.
        """
        V, S = self.codebook_size, self.usage.shape[0]
        if isinstance(candidates, torch.Tensor):
            candidates = [candidates]
        if len(candidates) != S:
            raise ValueError(f"Codebook.update: {len(candidates)} candidate tensors for {S} scales")
        with torch.no_grad(), torch.autocast(device_type=hits.device.type, enabled=False):
            parts = [hits.float().reshape(-1)]
            if self.ema_decay is not None:
                parts.append(assigned_sum.float().reshape(-1))
            flat = self.sync.all_reduce_sum(torch.cat(parts))  # one collective per step
            hits = flat[: S * V].view(S, V)

            # bias-corrected running average: the first step copies, later steps decay up to usage_decay
            n = int(self.num_updates)
            decay = min(self.usage_decay, n / (n + 1.0))
            self.usage.mul_(decay).add_(hits, alpha=1.0 - decay)
            self.num_updates += 1

            if self.ema_decay is not None:
                summed = flat[S * V:].view(V, self.dim)
                counts = hits.sum(0) if scale_weights is None else (hits * scale_weights.to(hits)[:, None]).sum(0)
                self.ema_count.mul_(self.ema_decay).add_(counts, alpha=1.0 - self.ema_decay)
                self.ema_sum.mul_(self.ema_decay).add_(summed, alpha=1.0 - self.ema_decay)
                # Laplace smoothing keeps rarely used codes finite (van den Oord et al., 2017, appendix)
                total = self.ema_count.sum()
                count = (self.ema_count + 1e-5) / (total + V * 1e-5) * total
                self.embedding.weight.copy_(self.ema_sum / count[:, None])

            self.restarted_last_update = 0
            if self.dead_code_threshold > 0:
                self._restart_dead(candidates)

    def _uniform_share(self) -> torch.Tensor:
        """(S, 1) running tokens per step of each scale divided by V: the hit count of a code under
        uniform use."""
        return self.usage.sum(1, keepdim=True) / self.codebook_size

    def alive(self) -> torch.Tensor:
        """(S, V) bool: the code is hit at that scale, at least ``dead_code_threshold`` of a uniform share."""
        return (self.usage > 0) & (self.usage >= self.dead_code_threshold * self._uniform_share())

    def _restart_dead(self, candidates: list[torch.Tensor]) -> None:
        alive = self.alive()  # identical on all processes: usage is reduced
        dead = ~alive.any(0)
        n_dead = int(dead.sum())
        sizes = torch.tensor([c.shape[0] for c in candidates], dtype=torch.float32)
        if n_dead == 0 or sizes.sum() == 0:
            return
        device = self.embedding.weight.device
        # Each dead code restarts from a vector of one scale, drawn with probability proportional to the
        # fraction of codes that scale leaves unused: the coarse scales, which quantise few vectors per step
        # and collapse first, get codes placed where their vectors are. Draws have a fixed RNG cost, and
        # rank 0's draws are broadcast so every process restarts to the same vectors.
        deficit = (1.0 - alive.float().mean(1)).cpu() + 1e-3
        deficit = torch.where(sizes > 0, deficit, torch.zeros_like(deficit))
        scale = torch.multinomial(deficit, n_dead, replacement=True)
        u = torch.rand(n_dead)
        new = torch.empty(n_dead, self.dim, device=device, dtype=torch.float32)
        for si, cand in enumerate(candidates):
            rows = (scale == si).nonzero().flatten()
            if len(rows):
                pick = (u[rows] * cand.shape[0]).long().clamp_max(cand.shape[0] - 1)
                new[rows.to(device)] = cand.detach().float()[pick.to(cand.device)].to(device)
        payload = torch.cat([new, scale.to(device=device, dtype=torch.float32)[:, None]], 1)
        payload = self.sync.broadcast(payload.contiguous(), src=0)  # one collective: vectors and scales
        new, scale = payload[:, :-1], payload[:, -1].long()
        self.embedding.weight[dead] = new.to(self.embedding.weight.dtype)
        # a grace period: the restarted code counts as holding a uniform share of the scale it came from,
        # which decays below the threshold after log(threshold) / log(usage_decay) steps without hits
        share = self._uniform_share().squeeze(1)
        idx = dead.nonzero().flatten()
        self.usage[:, idx] = 0.0
        self.usage[scale, idx] = share[scale]
        if self.ema_decay is not None:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new.float()
        self.restarted_last_update = n_dead

    # -- reporting ----------------------------------------------------------------------------------------
    def usage_fraction(self) -> torch.Tensor:
        """Per scale, the fraction of codes whose running hit count is at least 8% of a uniform share,
        VAR's notion of an active code. (S,)"""
        per_step = self.usage.sum(1, keepdim=True).clamp_min(1e-12)
        share = per_step / self.codebook_size
        return (self.usage >= 0.08 * share).float().mean(1)

    def perplexity(self) -> torch.Tensor:
        """Per scale, exp(entropy) of the running code distribution. (S,)"""
        p = self.usage / self.usage.sum(1, keepdim=True).clamp_min(1e-12)
        return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(1))


def batch_statistics(ids: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Usage fraction and perplexity of one batch of ids (any shape)."""
    hits = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    p = hits / hits.sum().clamp_min(1)
    return {
        "usage": (hits > 0).float().mean(),
        "perplexity": torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()),
    }
