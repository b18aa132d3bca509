"""Class accuracy of generated samples: a small CNN trained on the real labelled images scores whether each
sample shows the class it was conditioned on (the small-data stand-in for an ImageNet classifier)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class SmallClassifier(nn.Module):
    """Three conv stages with batch norm and global pooling: images (B, 3, H, W) in [-1, 1] → logits (B, K)."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers, c = [], 3
        for w in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, steps: int = 300,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, max_seconds: float | None = None,
                     device: str | torch.device = "cpu", progress: bool = True) -> SmallClassifier:
    """Fit ``SmallClassifier`` on (N, 3, H, W) images in [-1, 1] with random flips; stops early at max_seconds."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallClassifier(num_classes).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    for _ in tqdm(range(steps), desc="classifier", unit="step", disable=not progress, dynamic_ncols=True):
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        x, y = images[idx].to(device), labels[idx].to(device)
        flip = torch.rand(batch_size, generator=g) < 0.5
        x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if max_seconds is not None and time.time() - start > max_seconds:
            break
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256) -> float:
    """Fraction of images classified as their label."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = model(images[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == labels[i:i + batch_size]).sum())
    return correct / max(1, len(images))


@torch.no_grad()
def per_class_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    device = next(model.parameters()).device
    pred = torch.cat([model(images[i:i + 256].to(device)).argmax(1).cpu() for i in range(0, len(images), 256)])
    return [float((pred[labels == c] == c).float().mean()) if (labels == c).any() else float("nan")
            for c in range(num_classes)]
