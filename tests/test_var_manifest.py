"""The released VAR VQVAE (vae_ch160v4096z32) layout builds on the meta device with identical keys and shapes."""
import json

import torch

from artok import build_tokenizer, convert
from artok.convert.var import var_keys_to_artok
from conftest import FIXTURES


def manifest_state_dict(name: str) -> dict[str, torch.Tensor]:
    keys = json.loads((FIXTURES / "var" / "manifests" / name).read_text())["keys"]
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta") for k, v in keys.items()}


def test_release_vqvae_builds_on_meta_with_matching_keys_and_shapes():
    sd = manifest_state_dict("manifest_vae_ch160v4096z32.json")
    tok = convert.var_vqvae(sd, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    assert all(t.is_meta for t in tok.state_dict().values())
    # every official key maps onto exactly one artok tensor of the same shape, and nothing is left over
    mapped = var_keys_to_artok(sd, tok.config)
    own = tok.state_dict()
    assert set(own) - set(mapped) == {"quantizer.codebook.num_updates"}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(own[k].shape) for k in mapped}
    assert len(sd) == 324
    # and the inferred config is exactly the named preset
    assert tok.config == build_tokenizer("var-vqvae-f16").config
    with torch.device("meta"):
        preset = build_tokenizer("var-vqvae-f16")
    assert {k: v.shape for k, v in preset.state_dict().items()} == {k: v.shape for k, v in own.items()}
    assert sum(v.numel() for k, v in sd.items()) == 108_989_315
