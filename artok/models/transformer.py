"""Class-conditional block-causal transformer over multi-scale token maps (VAR, arXiv 2404.02905).

The sequence is every scale's token map, smallest first. A token attends to every token of its own block
and of all earlier blocks; a block is a whole scale (next-scale prediction) or one token (raster order,
the LlamaGen-style generator of a single-scale VQ tokenizer). Spec: docs/reference-behaviour.md, sections 4.3 and 4.4.

Teacher forcing: ``model(tok.teacher_inputs(ids), labels) -> logits (B, L, V)``; row i predicts token i.
Generation runs block by block through a KV cache (``new_cache`` / ``start_tokens`` / ``embed_block`` /
``step``); ``artok.sampling.generate`` drives it together with a tokenizer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from artok.config import GeneratorConfig
from artok.checkpoint import PretrainedMixin, register_model_type
from artok.models.attention import KVCache
from artok.models.blocks import AdaLNBlock
from artok.encoders.token_merge import bipartite_soft_matching


@register_model_type
class Generator(PretrainedMixin, nn.Module):
    """VAR's transformer: class embedding (+ null class ``num_classes`` for guidance), start tokens, absolute
    position and per-scale level embeddings, AdaLN blocks under a block-causal mask, AdaLN head."""

    model_type = "generator"
    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        D, L, depth = config.embed_dim, config.num_tokens, config.depth
        first = config.block_sizes[0]

        # -- input embeddings ---------------------------------------------------------------------------
        self.word_embed = nn.Linear(config.latent_channels, D)
        self.class_embed = nn.Embedding(config.num_classes + 1, D)  # the last row is the null class
        self.start_embed = nn.Parameter(torch.empty(1, first, D))  # VAR's pos_start
        self.pos_embed = nn.Parameter(torch.empty(1, L, D))  # VAR's pos_1LC: one per token
        self.level_embed = nn.Embedding(len(config.scales), D)  # one per scale

        # -- blocks -------------------------------------------------------------------------------------
        self.shared_adaln = nn.Linear(D, 6 * D) if config.shared_adaln else None
        rates = [config.drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList([
            AdaLNBlock(embed_dim=D, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                       shared_adaln=config.shared_adaln, l2_norm=config.attention_l2_norm,
                       norm_eps=config.norm_eps, dropout=config.dropout, drop_path=rate)
            for rate in rates
        ])

        # -- head ---------------------------------------------------------------------------------------
        self.head_norm = nn.LayerNorm(D, eps=config.norm_eps, elementwise_affine=False)
        self.head_adaln = nn.Linear(D, 2 * D)
        self.head = nn.Linear(D, config.codebook_size)

        # -- derived buffers (not saved): scale index and block index of each position ------------------
        levels = torch.cat([torch.full((pn * pn,), k, dtype=torch.long) for k, pn in enumerate(config.scales)])
        blocks = levels if config.block_unit == "scale" else torch.arange(L)
        self.register_buffer("levels", levels, persistent=False)  # (L,)
        self.register_buffer("attn_mask", blocks[:, None] >= blocks[None, :], persistent=False)  # (L, L)
        self.init_weights()

    # -- initialisation (VAR's init_weights with its defaults) ------------------------------------------
    @torch.no_grad()
    def init_weights(self, *, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float | None = None) -> None:
        """Truncated-normal weights with std √(1/(3D)); residual projections scaled by 1/√(2·depth); AdaLN
        gates γ start near zero (×1e-5) so every block starts close to the identity."""
        D, depth = self.config.embed_dim, self.config.depth
        std = init_std if init_std is not None else math.sqrt(1 / D / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        nn.init.trunc_normal_(self.start_embed, std=std)
        nn.init.trunc_normal_(self.pos_embed, std=std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_adaln.weight.mul_(init_adaln)
        self.head_adaln.bias.zero_()
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if block.shared_adaln:
                block.adaln_bias[:, :, 2:].mul_(init_adaln)
                block.adaln_bias[:, :, :2].mul_(init_adaln_gamma)
            else:
                block.adaln.weight[2 * D:].mul_(init_adaln)
                block.adaln.weight[:2 * D].mul_(init_adaln_gamma)
                block.adaln.bias.zero_()

    # -- shapes -------------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def block_sizes(self) -> list[int]:
        return self.config.block_sizes

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        """The label that selects the unconditional embedding (classifier-free guidance)."""
        return self.config.num_classes

    def check_labels(self, labels: torch.Tensor | list[int], batch: int | None = None) -> torch.Tensor:
        """Labels as a (B,) int64 tensor on the model's device; raises ValueError naming a bad id. The null
        class ``num_classes`` is allowed."""
        labels = torch.as_tensor(labels, device=self.class_embed.weight.device)
        if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor of class ids, got shape {tuple(labels.shape)} "
                             f"dtype {labels.dtype}")
        if batch is not None and labels.shape[0] != batch:
            raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch}")
        if labels.numel() and not labels.is_meta:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi > self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(f"class id {bad} is out of range: this generator has {self.num_classes} classes "
                                 f"(0..{self.num_classes - 1}, and {self.num_classes} for the null class)")
        return labels.long()

    # -- pieces shared by teacher forcing and KV-cached decoding -----------------------------------------
    def _level_pos(self) -> torch.Tensor:
        """level embedding + position embedding of every position: (1, L, D)."""
        return self.level_embed(self.levels)[None] + self.pos_embed

    def _block_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """What the blocks are modulated by: the class embedding (B, D), or with shared AdaLN the shared
        projection (B, 1, 6, D)."""
        if self.shared_adaln is None:
            return cond
        return self.shared_adaln(F.silu(cond)).view(-1, 1, 6, self.config.embed_dim)

    def logits(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """AdaLN head (always on the raw class embedding): x (B, l, D) → logits (B, l, V) in float32."""
        scale, shift = self.head_adaln(F.silu(cond)).view(-1, 1, 2, self.config.embed_dim).unbind(2)
        h = self.head_norm(x.float()) * (scale + 1) + shift
        return self.head(h).float()

    # -- teacher forcing ----------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing.

        inputs: (B, L − block_sizes[0], C) from ``tok.teacher_inputs(ids)``; labels: (B,) class ids in
        [0, num_classes] (num_classes = null class). In training mode each label is replaced by the null
        class with probability ``class_dropout``. Returns logits (B, L, V) float32; row i predicts token i.
        """
        cfg = self.config
        B = inputs.shape[0]
        expected = (cfg.num_tokens - cfg.block_sizes[0], cfg.latent_channels)
        if inputs.ndim != 3 or tuple(inputs.shape[1:]) != expected:
            raise ValueError(f"teacher inputs must be (B, {expected[0]}, {expected[1]}) for scales {cfg.scales} "
                             f"and {cfg.latent_channels} latent channels, got {tuple(inputs.shape)}")
        labels = self.check_labels(labels, B)
        if self.training and cfg.class_dropout > 0:
            dropped = torch.rand(B, device=labels.device) < cfg.class_dropout
            labels = torch.where(dropped, torch.full_like(labels, self.null_class), labels)
        cond = self.class_embed(labels)  # (B, D)
        start = cond[:, None] + self.start_embed  # (B, first, D)
        x = torch.cat((start, self.word_embed(inputs)), dim=1)  # (B, L, D)
        x = x + self._level_pos()
        block_cond = self._block_condition(cond)
        causal = cfg.block_unit == "token"
        mask = None if causal else self.attn_mask
        for block in self.blocks:
            x = block(x, block_cond, attn_mask=mask, is_causal=causal)
        return self.logits(x, cond)

    # -- KV-cached decoding -------------------------------------------------------------------------------
    def new_cache(self) -> KVCache:
        """A KV cache with buffers for the whole sequence (L tokens), allocated at the first block."""
        return KVCache(self.config.depth, capacity=self.config.num_tokens)

    def condition(self, labels: torch.Tensor | list[int]) -> torch.Tensor:
        """Class embeddings (B, D) of labels in [0, num_classes]."""
        return self.class_embed(self.check_labels(labels))

    def start_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        """The first block's input: (B, block_sizes[0], D)."""
        first = self.config.block_sizes[0]
        return cond[:, None] + self.start_embed + self._level_pos()[:, :first]

    def embed_block(self, inputs: torch.Tensor, start: int) -> torch.Tensor:
        """The input of the block that begins at position ``start``: inputs (B, l, C) from
        ``tok.autoregressive_step`` → (B, l, D)."""
        l = inputs.shape[1]
        return self.word_embed(inputs) + self._level_pos()[:, start:start + l]

    def step(self, x: torch.Tensor, cond: torch.Tensor, cache: KVCache, *, merge: float = 0.0) -> torch.Tensor:
        """Run one block of new tokens x (B, l, D) through the cache; returns their logits (B, l, V).

        merge: the fraction of the block's tokens to merge in every transformer block (training-free token
        merging, as FastVAR does at the largest scales; ``artok.sampling.Acceleration``): before each block
        the most similar pairs of tokens (ToMe's bipartite matching on the block's input) are averaged, the
        block runs on the fewer tokens, and each token adds the update of the token it merged into. The cache
        then holds the merged tokens' keys and values, so merge only blocks no later block attends to much
        (the last one or two scales). 0 is the exact model."""
        if cache.length + x.shape[1] > self.config.num_tokens:
            raise ValueError(f"the cache holds {cache.length} tokens; {x.shape[1]} more exceed L = {self.config.num_tokens}")
        if not 0.0 <= merge <= 0.5:
            raise ValueError(f"merge must be a fraction in [0, 0.5] (bipartite matching merges at most half), got {merge}")
        block_cond = self._block_condition(cond)
        r = int(merge * x.shape[1])
        for block, layer in zip(self.blocks, cache.layers):
            if r == 0:
                x = block(x, block_cond, cache=layer)
                continue
            matching = bipartite_soft_matching(x, r)
            merged = matching.merge(x, mode="mean")  # (B, l - r, D)
            x = x + matching.unmerge(block(merged, block_cond, cache=layer) - merged)
        return self.logits(x, cond)

    # -- reporting ----------------------------------------------------------------------------------------
    def describe(self) -> list[str]:
        cfg = self.config
        order = "next-scale (VAR)" if cfg.block_unit == "scale" else "raster order, one token per step"
        return [
            f"type            generator ({order})",
            f"parameters      {sum(p.numel() for p in self.parameters()):,}",
            f"transformer     depth {cfg.depth}, width {cfg.embed_dim}, {cfg.num_heads} heads, "
            f"{'shared' if cfg.shared_adaln else 'per-block'} AdaLN, "
            f"{'l2-normalised' if cfg.attention_l2_norm else 'scaled dot-product'} attention",
            f"classes         {cfg.num_classes} (+ null class {cfg.num_classes})",
            f"codebook        {cfg.codebook_size} codes, {cfg.latent_channels} latent channels",
            f"scales          {', '.join(map(str, cfg.scales))}",
            f"tokens / image  {cfg.num_tokens} in {len(cfg.block_sizes)} steps",
        ]
