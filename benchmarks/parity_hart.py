"""Print the parity of artok's HART (hybrid tokenizer, diffusion head, transformer, sampler) against the
official fixtures: max / mean abs diff per tensor, as a markdown table.

    python benchmarks/parity_hart.py [--fixtures tests/fixtures]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import load_file

from artok import convert
from artok.sampling import generate_hart
from parity_common import HEADER, row  # benchmarks/parity_common.py

SCALES = (1, 2, 3, 4, 6, 8)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(Path(__file__).parent.parent / "tests" / "fixtures"))
    fx = Path(ap.parse_args().fixtures) / "hart"
    rows = list(HEADER)
    raster = lambda t: rearrange(t, "b c h w -> b (h w) c")  # noqa: E731

    # -- tokenizer --------------------------------------------------------------------------------------
    io = load_file(str(fx / "tokenizer_io.safetensors"))
    tok = convert.hart_tokenizer(fx / "tokenizer_state_dict.safetensors", scales=SCALES)
    x = io["input_uint8"].float() / 255
    x = x + x - 1
    rows.append(row("tokenizer f", tok.encode(x), io["f"]))
    ids, f_rest, residual = tok.quantizer.split(io["f"])
    rows.append(row("tokenizer ids (from images)", torch.cat(tok.tokenize(x), 1), io["idx_all"]))
    rows.append(row("tokenizer frest_last", raster(f_rest), io["frest_last"]))
    rows.append(row("tokenizer cont_residual", raster(residual), io["cont_residual"]))
    rows.append(row("tokenizer fhat_discrete", tok.ids_to_latent(ids), io["fhat_discrete"]))
    rows.append(row("tokenizer fhat_hybrid", tok.ids_to_latent(ids, residual=residual), io["fhat_hybrid"]))
    rows.append(row("tokenizer recon_discrete", tok.detokenize(ids), io["recon_discrete"]))
    rows.append(row("tokenizer recon_hybrid", tok.detokenize(ids, residual), io["recon_hybrid"]))
    rows.append(row("tokenizer recon_continuous", tok.decode(io["f"]), io["recon_continuous"]))
    rows.append(row("tokenizer var_input", tok.teacher_inputs(ids), io["var_input"]))
    tok.quantizer.train()
    for skip, name in ((0.0, "hybrid"), (1.0, "discrete")):
        out = tok.quantizer(io["f"], skip_continuous_prob=skip)
        rows.append(row(f"tokenizer fwd_fhat_{name} (skip {skip})", out.quantized, io[f"fwd_fhat_{name}"]))
        rows.append(row(f"tokenizer fwd_loss_{name}", out.loss.reshape(1), io[f"fwd_loss_{name}"]))
    tok.quantizer.eval()

    # -- diffusion head ---------------------------------------------------------------------------------
    io = load_file(str(fx / "diffhead_io.safetensors"))
    head = convert.hart_diffusion_head(fx / "diffhead_state_dict.safetensors")
    rows.append(row("diffhead net_out", head(io["net_x"], io["net_t"], io["net_c"]), io["net_out"]))
    rows.append(row("diffhead cfg_out", head.net.forward_with_cfg(io["cfg_x"], io["cfg_t"], io["cfg_c"], 2.5),
                    io["cfg_out"]))
    losses = head.loss(io["tl_target"], io["tl_c"], t=io["tl_t"], noise=io["tl_noise"])
    for name in ("loss", "mse", "vb"):
        rows.append(row(f"diffhead tl_{name}", losses[name], io[f"tl_{name}"]))
    rows.append(row("diffhead sample_cfg_out", head.sample(
        io["sample_cfg_z"], cfg_scale=2.5, noise=(io["sample_cfg_init_noise"], io["sample_cfg_step_noise"])),
        io["sample_cfg_out"]))
    rows.append(row("diffhead sample_nocfg_out", head.sample(
        io["sample_nocfg_z"], cfg_scale=1.0, temperature=0.7,
        noise=(io["sample_nocfg_init_noise"], io["sample_nocfg_step_noise"])), io["sample_nocfg_out"]))

    # -- transformers -----------------------------------------------------------------------------------
    for name, heads, cfg in (("hart_a", None, 3.0), ("hart_b", 2, 1.5)):
        io = load_file(str(fx / f"{name}_io.safetensors"))
        model = convert.hart_transformer(fx / f"{name}_state_dict.safetensors", scales=SCALES, num_heads=heads)
        ctx = dict(context_mask=io["context_mask"], context_position_ids=io["context_position_ids"])
        out = model(io["tf_x_BLCv_wo_first_l"], io["context"], **ctx, keep=io["tf_kept_last_scale_positions"],
                    drop=io["tf_context_dropped"])
        rows.append(row(f"{name} tf_logits", out.logits, io["tf_logits"]))
        rows.append(row(f"{name} tf_diffusion_sampled_ids (argmax)", out.logits[:, -32:].argmax(-1),
                        io["tf_diffusion_sampled_ids"]))
        ar = generate_hart(model, tok, io["context"], **ctx, cfg_scale=cfg, top_k=1, return_logits=True,
                           diffusion_noise=(io["ar_diff_init_noise"], io["ar_diff_step_noise"]))
        rows.append(row(f"{name} ar_ids", torch.cat(ar.ids, 1), io["ar_ids"]))
        if "ar_guided_logits" in io:
            rows.append(row(f"{name} ar_guided_logits", torch.cat(ar.logits, 1), io["ar_guided_logits"]))
        rows.append(row(f"{name} ar_diff_cond", ar.diffusion_condition, io["ar_diff_cond"]))
        res = rearrange(ar.residual, "b c h w -> (b h w) c")
        rows.append(row(f"{name} ar_diff_out (cond half)", res, io["ar_diff_out"][: res.shape[0]]))
        rows.append(row(f"{name} ar_fhat", ar.latent, io["ar_fhat"]))
        rows.append(row(f"{name} ar_img", (ar.images + 1) / 2, io["ar_img"]))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
