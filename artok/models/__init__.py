"""Generators: VAR's block-causal next-scale transformer and HART's transformer with its residual diffusion
head, over one attention core and KV cache (``attention``)."""
from artok.models.attention import KVCache, SelfAttention
from artok.models.blocks import AdaLNBlock, HartBlock
from artok.models.diffusion_head import DiffusionHead
from artok.models.hart import HartTransformer
from artok.models.transformer import Generator

__all__ = ["AdaLNBlock", "DiffusionHead", "Generator", "HartBlock", "HartTransformer", "KVCache", "SelfAttention"]
