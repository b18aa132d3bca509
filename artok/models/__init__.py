"""Generators: the block-causal next-scale transformer and HART's residual diffusion head."""
from artok.models.blocks import AdaLNBlock, KVCache, SelfAttention
from artok.models.transformer import Generator

__all__ = ["AdaLNBlock", "Generator", "KVCache", "SelfAttention"]
