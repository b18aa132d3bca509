"""Print the parity of artok's VAR transformer and sampler against the official fixtures (var_a, var_b).

    python benchmarks/parity_var_transformer.py [--fixtures tests/fixtures]

Rows: teacher-forcing logits, greedy ids and latent, the decoded image sum, the stochastic run's ids
(var_a), and the KV-cached guided logits against guided teacher forcing on the sampled ids.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from artok import convert
from artok.sampling import generate, guidance_strength
from parity_common import HEADER, row  # benchmarks/parity_common.py

SCALES = (1, 2, 3, 4, 5, 6, 8)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(Path(__file__).parent.parent / "tests" / "fixtures"))
    fx = Path(ap.parse_args().fixtures) / "var"
    tok = convert.var_vqvae(fx / "vqvae_state_dict.safetensors", scales=SCALES)
    var_input = load_file(str(fx / "vqvae_io.safetensors"))["var_input"]
    rows = list(HEADER)
    for name, heads in (("var_a", None), ("var_b", 2)):
        io = load_file(str(fx / f"{name}_io.safetensors"))
        spec = json.loads((fx / f"{name}.json").read_text())
        gen = convert.var_transformer(fx / f"{name}_state_dict.safetensors", scales=SCALES, num_heads=heads)
        rows.append(row(f"{name} teacher-forcing logits", gen(var_input, io["tf_labels"]), io["tf_logits"]))

        cfg = spec["ar_greedy"]["cfg"]
        out = generate(gen, tok, io["ar_labels"], cfg_scale=cfg, top_k=1, return_logits=True)
        rows.append(row(f"{name} greedy ids", torch.cat(out.ids, 1), io["ar_ids"]))
        rows.append(row(f"{name} greedy latent f̂", out.latent, io["ar_fhat"]))
        image_sum = ((out.images.double() + 1) * 0.5).sum()
        rows.append(row(f"{name} greedy image sum", image_sum, torch.tensor(spec["ar_greedy"]["ar_img_sum"])))

        inputs = tok.teacher_inputs(out.ids)
        cond = gen(inputs, io["ar_labels"])
        uncond = gen(inputs, torch.full_like(io["ar_labels"], gen.null_class))
        guided, start = [], 0
        for k, size in enumerate(gen.block_sizes):
            t = guidance_strength(cfg, k, len(gen.block_sizes))
            guided.append((1 + t) * cond[:, start:start + size] - t * uncond[:, start:start + size])
            start += size
        rows.append(row(f"{name} KV-cached vs teacher-forced guided logits", torch.cat(out.logits, 1),
                        torch.cat(guided, 1)))
        if "stoch_ids" in io:
            run = spec["ar_stochastic"]
            stoch = generate(gen, tok, io["stoch_labels"], cfg_scale=run["cfg"], top_k=run["top_k"], top_p=run["top_p"],
                             generator=torch.Generator("cpu").manual_seed(run["g_seed"]), decode=False)
            rows.append(row(f"{name} stochastic ids (top-k 20, top-p 0.9, seed 123)", torch.cat(stoch.ids, 1),
                            io["stoch_ids"]))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
