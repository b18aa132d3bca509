"""Does text conditioning work? A text-to-image HART on the procedural shapes' captions ("a red circle", "blue
vertical stripes"), judged by whether prompts naming a shape give that shape more often than chance (1 in 10).

Trains a 16 px hybrid tokenizer, builds a tiny random Qwen2 text encoder (nothing downloaded; its states still
tell the words apart), encodes the shapes with their captions and contexts (``artok encode --text-encoder``'s
path), trains a small text-conditioned HART on the stored contexts, then samples ``--per-class`` prompts per
shape (each colour name in turn) and scores them with the quickstart's shapes classifier. About 15 minutes of
CPU with the defaults:

    python benchmarks/text_to_image_shapes.py --out runs/t2i-shapes
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_text import build_tiny_text_encoder  # noqa: E402

from artok.config import (DataConfig, GeneratorTrainConfig, LossConfig, TextEncoderConfig,  # noqa: E402
                          TokenizerTrainConfig, TrainConfig)
from artok.config.presets import hart_config, tokenizer_config  # noqa: E402
from artok.data import ProceduralShapes  # noqa: E402
from artok.data.builtin import COLOUR_NAMES, PROCEDURAL_CLASSES  # noqa: E402
from artok.data.captions import write_captions  # noqa: E402
from artok.data.encode import ImageSource, encode_dataset  # noqa: E402
from artok.metrics.classifier import accuracy, per_class_accuracy, train_classifier  # noqa: E402
from artok.models.text_encoder import TextEncoder  # noqa: E402
from artok.pipeline import from_pretrained  # noqa: E402
from artok.recipes.quickstart import CLASSIFIER_IMAGES, CLASSIFIER_STEPS, real_images  # noqa: E402
from artok.sampling import generate_from_prompts  # noqa: E402
from artok.training.generator_trainer import train_generator  # noqa: E402
from artok.training.tokenizer_trainer import train_tokenizer  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="runs/t2i-shapes")
p.add_argument("--tokenizer-minutes", type=float, default=3.5)
p.add_argument("--generator-minutes", type=float, default=7.0)
p.add_argument("--images", type=int, default=6000, help="captioned shapes encoded for the generator")
p.add_argument("--per-class", type=int, default=24, help="prompts sampled per shape")
p.add_argument("--cfg", type=float, default=3.0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--init-from", help="a trained quickstart-var-vqvae tokenizer to start the hybrid from (HART's recipe: "
               "its encoder and codebook frozen, the decoder and residual path trained)")
a = p.parse_args()
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
t0 = time.time()
classes = len(PROCEDURAL_CLASSES)

# 1. a hybrid tokenizer: the quickstart's, with HART's continuous residual ------------------------------------
tok_cfg = tokenizer_config("quickstart-var-vqvae")
tok_cfg = tok_cfg.replace(quantizer=tok_cfg.quantizer.replace(kind="hybrid"))
size = tok_cfg.image_size
train_tokenizer(TokenizerTrainConfig(
    tokenizer=tok_cfg, data=DataConfig(source="procedural", num_samples=20000, num_workers=0),
    loss=LossConfig(perceptual_weight=0.0, gan_weight=0.0, entropy_weight=0.1),
    train=TrainConfig(out_dir=str(out / "tokenizer"), seed=a.seed, batch_size=16, max_steps=100000,
                      init_from=a.init_from,
                      freeze=("encoder", "quant_conv", "quantizer.codebook") if a.init_from else (),
                      max_minutes=a.tokenizer_minutes, schedule_over="minutes", lr=1e-3, betas=(0.9, 0.95),
                      lr_schedule="cosine", warmup_steps=50, min_lr_ratio=0.05, ema_decay=0.99, log_every=50,
                      sample_every=100000, save_every=100000, eval_images=256, trackers=("none",), resume="never")),
    progress=False)
tok_dir = out / "tokenizer" / "tokenizer"
tok = from_pretrained(tok_dir).eval()
print(f"tokenizer trained ({(time.time() - t0) / 60:.1f} min)", flush=True)

# 2. text encoder, then ids + residuals + captions + contexts ----------------------------------------------
encoder_dir = build_tiny_text_encoder(out / "text-encoder", hidden_size=32)
encoder = TextEncoder(TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8))
source = ProceduralShapes(num_samples=a.images, image_size=size, seed=a.seed)
encode_dataset(tok, ImageSource(source, size, "none"), out / "tokens", image_size=size, shard_size=2048,
               batch_size=128, source="procedural", overwrite=True, progress=False)
write_captions(source, out / "tokens", encoder=encoder, batch_size=256, progress=True)
print(f"encoded {a.images} shapes with captions ({(time.time() - t0) / 60:.1f} min)", flush=True)

# 3. the shapes classifier (the quickstart's metric) -------------------------------------------------------
train_x, train_y = real_images(CLASSIFIER_IMAGES, split="train", image_size=size, style="scattered")
test_x, test_y = real_images(1000, split="test", image_size=size, style="scattered")
classifier = train_classifier(train_x, train_y, num_classes=classes, steps=CLASSIFIER_STEPS, batch_size=64,
                              progress=False, seed=0)
real_acc = accuracy(classifier, test_x, test_y)
with torch.no_grad():
    recs = tok.detokenize(*tok.tokenize_hybrid(test_x))
rec_acc = accuracy(classifier, recs, test_y)
print(f"classifier: {real_acc:.1%} on real test shapes, {rec_acc:.1%} on hybrid reconstructions", flush=True)

# 4. a text-conditioned HART on the stored contexts ---------------------------------------------------------
gen_cfg = hart_config("tiny-hart-t2i", codebook_size=tok.codebook_size, latent_channels=tok.latent_channels,
                      scales=tuple(tok.scales), depth=4, embed_dim=64, num_heads=4, context_dim=32,
                      max_context_tokens=8, min_kept_tokens=16, train_top_k=0, train_top_p=0.0,
                      diffusion_head={"latent_channels": tok.latent_channels, "condition_dim": 64, "width": 64,
                                      "depth": 2})
cfg = GeneratorTrainConfig.from_dict({
    "generator": gen_cfg.to_dict(), "tokenizer": str(tok_dir),
    "data": {"tokens": str(out / "tokens"), "num_workers": 0},
    "recipe": {"scale_lr": False, "samples_per_class": 4, "sample_cfg": a.cfg, "sample_top_k": 0, "sample_top_p": 0.0,
               "sample_prompts": [f"a red {c}" if not c.endswith("stripes") else f"red {c}" for c in PROCEDURAL_CLASSES]},
    "train": {"out_dir": str(out / "generator"), "seed": a.seed, "batch_size": 32, "max_steps": 100000,
              "max_minutes": a.generator_minutes, "schedule_over": "minutes", "lr": 3e-3, "warmup_steps": 50,
              "lr_schedule": "linear", "min_lr_ratio": 0.05, "weight_decay": 0.05, "ema_decay": 0.995,
              "log_every": 50, "sample_every": 100000, "save_every": 100000, "trackers": ["none"],
              "resume": "never"}})
result = train_generator(cfg, progress=False)
print(f"generator: {result.step} steps, final loss {result.final_loss:.3f} ({(time.time() - t0) / 60:.1f} min)",
      flush=True)

# 5. prompts naming each shape → the classifier's verdict ----------------------------------------------------
pipe = from_pretrained(out / "generator" / "pipeline")
sampler = TextEncoder(pipe.text_encoder, base_dir=pipe.directory)
colours = list(COLOUR_NAMES)
samples, labels, prompts = [], [], []
for c, name in enumerate(PROCEDURAL_CLASSES):
    batch = [f"{colours[i % len(colours)]} {name}" if name.endswith("stripes") else
             f"a {colours[i % len(colours)]} {name}" for i in range(a.per_class)]
    out_c = generate_from_prompts(pipe.generator.eval(), pipe.tokenizer.eval(), sampler, batch, cfg_scale=a.cfg,
                                  generator=torch.Generator().manual_seed(a.seed + c))
    samples.append(out_c.images)
    labels += [c] * len(batch)
    prompts += batch
samples, labels = torch.cat(samples), torch.tensor(labels)
acc = accuracy(classifier, samples, labels)
per_class = per_class_accuracy(classifier, samples, labels, classes)
with torch.no_grad():
    predicted = classifier(samples).argmax(-1)
report = {"prompt_shape_accuracy": acc, "chance": 1 / classes, "per_class": dict(zip(PROCEDURAL_CLASSES, per_class)),
          "classifier_real_accuracy": real_acc, "classifier_reconstruction_accuracy": rec_acc,
          "generator_steps": result.step, "images": a.images, "per_class_prompts": a.per_class, "cfg": a.cfg,
          "minutes": (time.time() - t0) / 60,
          "predicted_histogram": torch.bincount(predicted, minlength=classes).tolist()}
(out / "report.json").write_text(json.dumps(report, indent=2))
from torchvision.utils import save_image  # noqa: E402

save_image(samples.view(classes, a.per_class, *samples.shape[1:])[:, :12].flatten(0, 1) * 0.5 + 0.5,
           out / "samples_per_prompt_shape.png", nrow=12)
print(json.dumps(report, indent=2))
print(f"prompts naming a shape gave that shape {acc:.1%} of the time (chance {1 / classes:.0%}); "
      f"{(time.time() - t0) / 60:.1f} min")
