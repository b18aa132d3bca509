"""The tokenizer training objective: reconstruction + perceptual + quantizer + entropy + adversarial terms,
weighted by a ``LossConfig``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from artok.config import LossConfig
from artok.losses.entropy import entropy_regularizer
from artok.losses.gan import adaptive_weight, discriminator_loss, gan_warmup_factor, generator_loss
from artok.losses.recon import reconstruction_loss


class TokenizerLoss(nn.Module):
    """Generator and discriminator losses of one training step; returns (loss, named detached terms)."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        self.perceptual = None
        if config.perceptual_weight > 0:
            from artok.losses.perceptual import LPIPS

            self.perceptual = LPIPS(config.perceptual_network, backbone_weights=config.perceptual_backbone_weights)

    def quantizer_weight(self, name: str) -> float:
        return {"commitment": self.config.commitment_weight, "codebook": self.config.codebook_weight}.get(name, 1.0)

    def gan_active(self, step: int) -> bool:
        return self.config.gan_weight > 0 and gan_warmup_factor(step, self.config.gan_start_step) > 0

    def entropy(self, inputs: list[torch.Tensor], tokenizer: nn.Module) -> torch.Tensor:
        """Entropy regulariser, averaged over scales, on the vectors each scale actually quantised (for the
        multi-scale quantiser: the area-downsampled residual left by the coarser scales), so that every
        scale, not only the finest, is pushed to spread over the codebook. inputs: the tokenizer output's
        ``quantizer_inputs``, (N_s, C) per scale. ``loss.entropy_scales`` limits it to the first scales (the
        coarse ones, which collapse; on the fine ones it costs reconstruction)."""
        codebook = tokenizer.quantizer.codebook
        if self.config.entropy_scales is not None:
            inputs = inputs[: self.config.entropy_scales]
        terms = [entropy_regularizer(z, codebook.weight, temperature=self.config.entropy_temperature,
                                     l2_norm=codebook.l2_norm) for z in inputs]
        return torch.stack(terms).mean()

    def generator_loss(self, output, images: torch.Tensor, *, step: int, tokenizer: nn.Module,
                       discriminator: nn.Module | None = None):
        """output: the tokenizer's ``TokenizerOutput``; images: (B, 3, H, W) targets in [-1, 1]."""
        cfg = self.config
        rec = output.reconstruction.float()
        logs: dict[str, torch.Tensor] = {}
        recon = reconstruction_loss(rec, images, cfg.reconstruction)
        nll = cfg.reconstruction_weight * recon
        logs["reconstruction"] = recon.detach()
        if self.perceptual is not None:
            perceptual = self.perceptual(rec, images.float()).mean()
            nll = nll + cfg.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.detach()
        total = nll
        for name, value in output.losses.items():
            total = total + self.quantizer_weight(name) * value.float()
            logs[name] = value.detach().float()
        if cfg.entropy_weight > 0 and output.quantizer_inputs:
            entropy = self.entropy(output.quantizer_inputs, tokenizer)
            total = total + cfg.entropy_weight * entropy
            logs["entropy"] = entropy.detach()
        if discriminator is not None and self.gan_active(step):
            g = generator_loss(discriminator(rec), cfg.gan_loss)
            weight = torch.ones((), device=rec.device)
            if cfg.adaptive_gan_weight and torch.is_grad_enabled():
                weight = adaptive_weight(nll, g, tokenizer.last_decoder_layer(), max_weight=cfg.max_adaptive_weight)
            total = total + cfg.gan_weight * weight * g
            logs["generator"] = g.detach()
            logs["adaptive_weight"] = weight.detach()
        logs["loss"] = total.detach()
        with torch.no_grad():  # batch PSNR of the training reconstruction, for the progress bar and curves
            mse = F.mse_loss((rec.detach().clamp(-1, 1) + 1) / 2, (images.float() + 1) / 2)
            logs["psnr"] = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
        return total, logs

    def discriminator_loss(self, discriminator: nn.Module, images: torch.Tensor, reconstruction: torch.Tensor):
        """One forward over real and reconstructed images together (one DDP forward per backward)."""
        logits = discriminator(torch.cat([images, reconstruction.detach().to(images.dtype)]))
        real, fake = logits.chunk(2)
        loss = discriminator_loss(real, fake, self.config.gan_loss)
        return loss, {"discriminator": loss.detach(), "logits_real": real.detach().float().mean(),
                      "logits_fake": fake.detach().float().mean()}
