"""Generators: the block-causal next-scale transformer and HART's residual diffusion head."""
