"""Research probe behind the README's quickstart generator table: the quickstart's generator on the tokens a
tokenizer probe wrote (``--run``), for ``--seconds``, then class accuracy under the probe's classifier for each
sampler setting of ``--sweep`` (cfg:top_k[:temperature[:schedule]]). GAMMA=x in the environment initialises the
AdaLN gates at x instead of 1e-5. The runs quoted in the README (on runs/qs/t2 unless --run says otherwise):

    python benchmarks/research/quickstart_generator_probe.py --run runs/qs/t2 --out runs/qs/g1 --seconds 240 --per-class 30
    GAMMA=0.5 python benchmarks/research/quickstart_generator_probe.py --run runs/qs/t2 --out runs/qs/g2 --seconds 240 --sweep 3:0 --per-class 20
    GAMMA=0.5 python benchmarks/research/quickstart_generator_probe.py --run runs/qs/t2 --out runs/qs/g3 --seconds 240 --lr 3e-3 --sweep 3:0 --per-class 20
    python benchmarks/research/quickstart_generator_probe.py --run runs/qs/t2 --out runs/qs/g4 --seconds 240 --lr 6e-3 --sweep 3:0 --per-class 20
    ... --out runs/qs/g5 --lr 1e-2;  --out runs/qs/g6 --lr 6e-3 --batch 16;  --out runs/qs/g8 --lr 6e-3 --gen '{"embed_dim":96}'
    ... --run runs/qs/t4 --out runs/qs/g7 --lr 6e-3 --gen '{"codebook_size":128}'
    ... --run runs/qs/tB --out runs/qs/gB --lr 6e-3 --sweep 3:0 --per-class 20 \
        --train '{"max_minutes": null, "schedule_over": "steps", "max_steps": 726}'
    ... --out runs/qs/g9 --seconds 240 --lr 6e-3 --gen '{"embed_dim":64,"num_heads":2}' --sweep 3:0 --per-class 20
    ... --out runs/qs/g10 --seconds 240 --lr 1e-2 --gen '{"embed_dim":96}' --sweep 3:0 --per-class 20
    ... --run runs/qs/tD --out runs/qs/gD --seconds 240 --lr 6e-3 --gen '{"embed_dim":96,"scales":[1,2,3,4,6,8]}' \
        --sweep 3:0 --per-class 20
"""

import argparse, json, sys, time
from pathlib import Path
import torch
from artok.config import GeneratorTrainConfig
from artok.registry import generator_config
from artok.recipes.quickstart import real_images, sample_per_class
from artok.metrics.classifier import accuracy, per_class_accuracy, train_classifier
from artok.training.generator_trainer import train_generator

p = argparse.ArgumentParser()
p.add_argument("--run", required=True)  # quickstart dir with tokenizer/ and tokens/
p.add_argument("--out", required=True)
p.add_argument("--seconds", type=float, default=240)
p.add_argument("--gen", default="{}")
p.add_argument("--train", default="{}")
p.add_argument("--recipe", default="{}")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--sweep", default="3:0,1.5:0,3:64,5:64,3:16")  # cfg:topk
p.add_argument("--per-class", type=int, default=30)
a = p.parse_args()
import os, functools
from artok.models.transformer import Generator as _G
if os.environ.get("GAMMA"):
    _orig = _G.init_weights
    def _iw(self, **kw):
        kw.setdefault("init_adaln_gamma", float(os.environ["GAMMA"]))
        return _orig(self, **kw)
    _G.init_weights = _iw
torch.set_num_threads(2)
run = Path(a.run)
clf_path = run / "classifier.pt"
size = 16
if clf_path.exists():
    clf = torch.load(clf_path, weights_only=False)
else:
    x, y = real_images(3000, split="train", image_size=size, style="scattered")
    clf = train_classifier(x, y, num_classes=10, steps=150, batch_size=32, progress=False, seed=0)
    torch.save(clf, clf_path)
tx, ty = real_images(1000, split="test", image_size=size, style="scattered")
print("classifier on real", accuracy(clf, tx, ty))
g = generator_config("quickstart-var").to_dict(); g.update(json.loads(a.gen))
train = {"out_dir": a.out, "seed": 0, "batch_size": a.batch, "max_steps": 10**6, "max_minutes": a.seconds / 60,
         "schedule_over": "minutes", "lr": a.lr, "warmup_steps": 50, "lr_schedule": "linear", "min_lr_ratio": 0.05,
         "weight_decay": 0.05, "ema_decay": 0.995, "log_every": 20, "sample_every": 10**6, "save_every": 10**6,
         "resume": "never", "trackers": []}
train.update(json.loads(a.train))
recipe = {"scale_lr": False, "sample_classes": list(range(10)), "samples_per_class": 4, "sample_cfg": 3.0,
          "sample_top_k": 0, "sample_top_p": 0.0, "sample_seed": 0}
recipe.update(json.loads(a.recipe))
cfg = GeneratorTrainConfig.from_dict({"generator": g, "tokenizer": str(run / "tokenizer" / "tokenizer"),
                                      "data": {"tokens": str(run / "tokens"), "num_workers": 0},
                                      "recipe": recipe, "train": train})
t = time.time()
res = train_generator(cfg, progress=False)
print(f"trained {res.step} steps in {time.time()-t:.0f}s loss {res.final_loss}")
from artok.pipeline import load_pipeline
from artok.sampling import generate
tok, gen = load_pipeline(Path(a.out) / "pipeline", "cpu")
rows = []
for spec in a.sweep.split(","):
    parts = spec.split(":")
    cfgs, k = float(parts[0]), int(parts[1])
    temp = float(parts[2]) if len(parts) > 2 else 1.0
    sched = parts[3] if len(parts) > 3 else "linear"
    labels = torch.arange(10).repeat_interleave(a.per_class)
    imgs = []
    for i in range(0, len(labels), 100):
        rng = torch.Generator().manual_seed(i)
        imgs.append(generate(gen, tok, labels[i:i+100], cfg_scale=cfgs, top_k=k, temperature=temp, cfg_schedule=sched,
                             generator=rng).images)
    imgs = torch.cat(imgs)
    acc = accuracy(clf, imgs, labels); pc = per_class_accuracy(clf, imgs, labels, 10)
    rows.append((spec, acc, min(pc)))
    print(f"  {spec:>14}: acc {acc:.1%}  min class {min(pc):.0%}  per class {' '.join(f'{c:.0%}' for c in pc)}", flush=True)
    if spec == a.sweep.split(",")[0]:
        from artok.recipes.quickstart import save_class_grid
        save_class_grid(imgs.view(10, a.per_class, *imgs.shape[1:])[:, :10].flatten(0, 1), 10, Path(a.out) / "grid.png")
json.dump({"steps": res.step, "rows": rows}, open(Path(a.out) / "result.json", "w"))
