"""Generators: the block-causal next-scale transformer and HART's residual diffusion head."""
from artok.models.blocks import AdaLNBlock, KVCache, SelfAttention
from artok.models.transformer import Generator

__all__ = ["AdaLNBlock", "Generator", "KVCache", "SelfAttention"]
from artok.models.diffusion_head import DiffusionHead  # noqa: E402
from artok.models.hart import HartTransformer  # noqa: E402

__all__ += ["DiffusionHead", "HartTransformer"]
