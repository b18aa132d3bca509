"""Tokenizer training losses: reconstruction, LPIPS, PatchGAN, entropy regularisation."""
from artok.losses.entropy import entropy_regularizer
from artok.losses.gan import (PatchDiscriminator, adaptive_weight, discriminator_loss, gan_warmup_factor,
                              generator_loss)
from artok.losses.perceptual import LPIPS, PerceptualWeightsError, load_backbone_state_dict
from artok.losses.recon import reconstruction_loss
from artok.losses.tokenizer import TokenizerLoss

__all__ = ["LPIPS", "PatchDiscriminator", "PerceptualWeightsError", "TokenizerLoss", "adaptive_weight",
           "discriminator_loss", "entropy_regularizer", "gan_warmup_factor", "generator_loss",
           "load_backbone_state_dict", "reconstruction_loss"]
