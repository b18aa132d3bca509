"""Print the parity of artok's VAR tokenizer against the official fixtures: max/mean abs diff per tensor.

    python benchmarks/parity_var_tokenizer.py [--fixtures tests/fixtures]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from artok import convert
from parity_common import HEADER, row  # benchmarks/parity_common.py


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(Path(__file__).parent.parent / "tests" / "fixtures"))
    fx = Path(ap.parse_args().fixtures) / "var"
    rows = list(HEADER)

    io = load_file(str(fx / "vqvae_io.safetensors"))
    tok = convert.var_vqvae(fx / "vqvae_state_dict.safetensors", scales=(1, 2, 3, 4, 5, 6, 8))
    x = io["input_uint8"].float() / 255
    x = x + x - 1
    f = tok.encode(x)
    ids = tok.tokenize(x)
    rows.append(row("vqvae f", f, io["f"]))
    rows.append(row("vqvae ids (all scales)", torch.cat(ids, 1), io["idx_all"]))
    fhats = tok.quantizer.cumulative_latents(io["f"])
    rows.append(row("vqvae f̂ (max over scales)", torch.stack(fhats), torch.stack([io[f"fhat_s{k}"] for k in range(7)])))
    gt = [io[f"idx_s{k}"] for k in range(7)]
    rows.append(row("vqvae teacher inputs", tok.teacher_inputs(gt), io["var_input"]))
    rows.append(row("vqvae reconstruction", tok.detokenize(gt), io["recon_from_idx"]))
    tok.quantizer.train()
    with torch.enable_grad():
        out = tok.quantizer(io["f"])
    rows.append(row("vqvae training f̂", out.quantized, io["fwd_fhat"]))
    rows.append(row("vqvae vq loss", out.loss.reshape(1), io["fwd_vq_loss"]))

    io = load_file(str(fx / "quantizer_io.safetensors"))
    scales = tuple(json.loads((fx / "quantizer.json").read_text())["constructor"]["v_patch_nums"])
    q = convert.var_quantizer(fx / "quantizer_state_dict.safetensors", scales=scales)
    ids = q.quantize(io["f"])
    rows.append(row("quantizer ids (10 scales)", torch.cat(ids, 1), io["idx_all"]))
    rows.append(row("quantizer f̂ (max over scales)", torch.stack(q.cumulative_latents(io["f"])),
                    torch.stack([io[f"fhat_s{k}"] for k in range(len(scales))])))
    rows.append(row("quantizer teacher inputs", q.teacher_inputs(ids), io["var_input"]))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
