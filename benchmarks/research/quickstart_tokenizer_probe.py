"""Research probe behind the README's quickstart tables: the quickstart's tokenizer stage (and encoding of 8,000
shapes) with overrides, then the accuracy of a classifier trained on 10,000 real shapes (cached in
runs/qs/clf16.pt) on the reconstructions after each prefix of scales. The runs quoted in the README:

    python benchmarks/research/quickstart_tokenizer_probe.py --out runs/qs/t2            # shapes with the 2 px bound
    python benchmarks/research/quickstart_tokenizer_probe.py --out runs/qs/t4 --tok '{"quantizer":{"codebook_size":128}}'
    python benchmarks/research/quickstart_tokenizer_probe.py --out runs/qs/tB \
        --tok '{"quantizer":{"scale_norm":true,"prefix_dropout":0.2}}' \
        --train '{"max_minutes": null, "schedule_over": "steps", "max_steps": 1128}'
    python benchmarks/research/quickstart_tokenizer_probe.py --out runs/qs/tD --tok '{"quantizer":{"scales":[1,2,3,4,6,8]}}'

(the old-shapes row scored the tokenizer of an `artok quickstart --minutes 10` run of commit 4bea469 the same way).
"""

import argparse, json, time
from pathlib import Path
import torch
from artok.config import DataConfig, LossConfig, TokenizerTrainConfig, TrainConfig
from artok.registry import tokenizer_config
from artok.recipes.quickstart import real_images
from artok.metrics.classifier import accuracy, per_class_accuracy
from artok.metrics.evaluate import prefix_reconstructions
from artok.metrics.image import psnr
from artok.hub import from_pretrained

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--seconds", type=float, default=216)
p.add_argument("--tok", default="{}")    # dict merged into the preset (nested dicts merged one level)
p.add_argument("--loss", default='{"perceptual_weight":0,"gan_weight":0,"entropy_weight":0.1}')
p.add_argument("--train", default="{}")
p.add_argument("--encode", type=int, default=8000)
a = p.parse_args()
out = Path(a.out)
tc = tokenizer_config("quickstart-var-vqvae").to_dict()
for k, v in json.loads(a.tok).items():
    if isinstance(v, dict): tc[k].update(v)
    else: tc[k] = v
train = dict(out_dir=str(out / "tokenizer"), seed=0, batch_size=16, max_steps=10**6, max_minutes=a.seconds / 60,
             schedule_over="minutes", lr=1e-3, betas=(0.9, 0.95), lr_schedule="cosine", warmup_steps=100,
             min_lr_ratio=0.05, ema_decay=0.99, log_every=50, sample_every=10**6, save_every=10**6, eval_images=512,
             trackers=(), resume="never")
train.update(json.loads(a.train))
from artok.config.tokenizer import TokenizerConfig
cfg = TokenizerTrainConfig(tokenizer=TokenizerConfig.from_dict(tc),
                           data=DataConfig(source="procedural", num_samples=20000, num_workers=0),
                           loss=LossConfig(**json.loads(a.loss)), train=TrainConfig(**train))
from artok.training.tokenizer_trainer import train_tokenizer
t = time.time()
r = train_tokenizer(cfg, progress=False)
print(f"tokenizer {r.step} steps {time.time()-t:.0f}s eval psnr {r.eval.get('psnr') if r.eval else None}")
tok = from_pretrained(out / "tokenizer" / "tokenizer").eval()
import os
from artok.metrics.classifier import train_classifier
if not os.path.exists("runs/qs/clf16.pt"):
    x, y = real_images(10000, split="train", image_size=16, style="scattered")
    torch.save(train_classifier(x, y, num_classes=10, steps=1000, batch_size=64, progress=False, seed=0), "runs/qs/clf16.pt")
clf = torch.load("runs/qs/clf16.pt", weights_only=False)
tx, ty = real_images(1000, split="test", image_size=16, style="scattered")
with torch.no_grad():
    ids = tok.tokenize(tx)
    recs = prefix_reconstructions(tok, ids) + [tok.detokenize(ids)]
res = {"steps": r.step}
for k, rec in enumerate(recs):
    pc = per_class_accuracy(clf, rec, ty, 10)
    ps = psnr(rec, tx).mean().item()
    res[f"p{k+1}"] = (ps, accuracy(clf, rec, ty))
    print(f"prefix {k+1}: psnr {ps:.2f} acc {accuracy(clf, rec, ty):.1%} per class", " ".join(f"{c:.0%}" for c in pc))
from collections import Counter
print("usage", [len(set(i.flatten().tolist())) for i in ids])
json.dump(res, open(out / "tok_result.json", "w"))
if a.encode:
    from artok.data import ProceduralShapes
    from artok.data.encode import ImageSource, encode_dataset
    src = ProceduralShapes(num_samples=a.encode, image_size=16, seed=0)
    encode_dataset(tok, ImageSource(src, 16, "none"), out / "tokens", image_size=16, shard_size=2048, batch_size=128,
                   source="procedural", overwrite=True, progress=False)
    import shutil; shutil.copy("runs/qs/clf16.pt", out / "classifier.pt")
