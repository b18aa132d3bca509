"""Noise schedules and samplers for HART's residual diffusion head: glue over diffusers' schedulers."""
from artok.schedulers.diffusion import ResidualDiffusion, respaced_timesteps  # noqa: F401
