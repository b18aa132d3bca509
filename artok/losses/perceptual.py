"""LPIPS perceptual distance (Zhang et al., 2018) through the ``lpips`` package, with honest weight loading.

The ``lpips`` package ships its calibrated linear heads, but its backbone (VGG16, AlexNet or SqueezeNet)
comes from torchvision's ImageNet download. This module loads that backbone from, in order: a file you
name, torchvision's cache (``$TORCH_HOME/hub/checkpoints``), or the download. When none works it raises
``PerceptualWeightsError`` saying how to provide the file; it never falls back to a random backbone, which
would make the loss and the metric meaningless while looking fine.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

BACKBONE_WEIGHTS = {  # LPIPS network → torchvision weights enum name
    "vgg": "VGG16_Weights",
    "alex": "AlexNet_Weights",
    "squeeze": "SqueezeNet1_1_Weights",
}


class PerceptualWeightsError(RuntimeError):
    """The ImageNet backbone of LPIPS cannot be loaded."""


def backbone_url(network: str) -> str:
    import torchvision

    if network not in BACKBONE_WEIGHTS:
        raise ValueError(f"LPIPS network must be one of {', '.join(BACKBONE_WEIGHTS)}, got '{network}'")
    return getattr(torchvision.models, BACKBONE_WEIGHTS[network]).IMAGENET1K_V1.url


def backbone_cache_path(network: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_url(network).rsplit("/", 1)[-1]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_backbone_state_dict(network: str, weights: str | Path | None = None, *,
                             download: bool = True) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet state dict of the LPIPS backbone, or ``PerceptualWeightsError``."""
    url, cached = backbone_url(network), backbone_cache_path(network)
    how = (f"LPIPS ({network}) needs torchvision's ImageNet weights {url.rsplit('/', 1)[-1]}. Download {url} "
           f"on a machine with internet and either put it at {cached} or pass its path "
           f"(loss.perceptual_backbone_weights in a training config, --lpips-weights for artok eval). "
           f"To train without it set loss.perceptual_weight=0; to evaluate without it leave lpips out of --metrics.")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PerceptualWeightsError(f"LPIPS backbone weights {path} do not exist. {how}")
        return _read_state_dict(path)
    if cached.is_file():
        return _read_state_dict(cached)
    if not download:
        raise PerceptualWeightsError(f"{cached} is missing. {how}")
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except Exception as e:
        raise PerceptualWeightsError(f"downloading failed ({type(e).__name__}: {e}). {how}") from None


class LPIPS(nn.Module):
    """Frozen LPIPS distance: x, y (B, 3, H, W) in [-1, 1] → (B,) (0 = identical)."""

    def __init__(self, network: str = "vgg", *, backbone_weights: str | Path | None = None,
                 download: bool = True) -> None:
        super().__init__()
        import lpips

        state = load_backbone_state_dict(network, backbone_weights, download=download)  # fail before building
        with warnings.catch_warnings():  # lpips builds torchvision nets with the deprecated `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=network, pnet_rand=True, verbose=False)  # heads loaded, trunk below
        self._load_trunk(state)
        self.requires_grad_(False)
        self.eval()

    def _load_trunk(self, state: dict[str, torch.Tensor]) -> None:
        """Map torchvision's ``features.<i>.*`` keys onto lpips' ``slice<k>.<i>.*`` and load strictly."""
        trunk = self.model.net
        where = {name: slice_name for slice_name, block in trunk.named_children() for name in block._modules}
        mapped = {}
        for key, value in state.items():
            m = re.match(r"features\.(\d+)\.(.+)", key)
            if m and m.group(1) in where:
                mapped[f"{where[m.group(1)]}.{m.group(1)}.{m.group(2)}"] = value
        own = trunk.state_dict()
        missing = [k for k in own if k not in mapped]
        if missing:
            raise PerceptualWeightsError(f"the LPIPS backbone state dict lacks {len(missing)} tensors "
                                         f"(e.g. {missing[0]}); is it torchvision's {type(trunk).__name__}?")
        bad = [k for k in own if tuple(own[k].shape) != tuple(mapped[k].shape)]
        if bad:
            raise PerceptualWeightsError(f"LPIPS backbone tensor {bad[0]} has shape {tuple(mapped[bad[0]].shape)}, "
                                         f"expected {tuple(own[bad[0]].shape)}")
        trunk.load_state_dict({k: mapped[k] for k in own}, strict=True)

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always frozen: dropout in the heads stays off

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B, 3, H, W) in [-1, 1] → (B,) fp32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.model(x.float(), y.float()).flatten()
