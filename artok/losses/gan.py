"""PatchGAN discriminator and adversarial losses for tokenizer training (pix2pix, Isola et al. 2017;
VQGAN, Esser et al. 2021 §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"discriminator norm must be 'batch', 'group' or 'none', got '{kind}'")


class PatchDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN: images (B, 3, H, W) → real/fake logits per patch (B, 1, h, w).

    ``num_layers`` stride-2 4×4 convolutions (channels ×2 each, capped at 8×), then two stride-1 ones; the
    receptive field is 70 px for 3 layers. ``norm`` ``batch`` is VQGAN's choice; ``group`` (the default here)
    does not depend on the per-process batch size.
    """

    def __init__(self, *, channels: int = 64, num_layers: int = 3, norm: str = "group") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = channels
        for n in range(1, num_layers + 1):
            prev, width = width, channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(prev, width, 4, stride=stride, padding=1, bias=norm == "none"),
                       _norm(norm, width), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:  # DCGAN initialisation, as pix2pix and VQGAN use
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1] → logits (B, 1, h, w)."""
        return self.main(images)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Hinge: mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))), halved as VQGAN does; or non-saturating BCE."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())
    if kind == "non-saturating":
        return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
    raise ValueError(f"GAN loss must be 'hinge' or 'non-saturating', got '{kind}'")


def generator_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Hinge: −mean(D(x̂)); non-saturating: mean(softplus(−D(x̂)))."""
    fake_logits = fake_logits.float()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"GAN loss must be 'hinge' or 'non-saturating', got '{kind}'")


def adaptive_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, *,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN eq. 7: λ = ‖∇_L nll‖ / (‖∇_L G‖ + 1e-4) at the decoder's last layer L, clamped, detached.

    Balances the adversarial gradient against the reconstruction gradient where both enter the decoder.
    """
    nll_grad, = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def gan_warmup_factor(step: int, start_step: int) -> float:
    """0 before ``start_step`` (reconstruction-only warm-up, so the discriminator does not attack blurry
    early reconstructions), 1 from then on."""
    return 1.0 if step >= start_step else 0.0
