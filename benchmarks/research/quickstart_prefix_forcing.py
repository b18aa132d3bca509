"""Where does the quickstart generator lose the class? Its samples' class accuracy when the first k scales are
the real ids of test images of that class (``generate(..., prefix=ids[:k])``) and the rest is sampled, for
k = 0 (free sampling) .. K − 1, under the probe's classifier. If accuracy climbs only when the last scale's
input is given, every class is decided in the last parallel step. The README's row:

    python benchmarks/research/quickstart_prefix_forcing.py --run runs/qs/t2 --pipeline runs/qs/g8/pipeline
"""
import argparse
import json
from pathlib import Path

import torch

from artok.metrics.classifier import accuracy, per_class_accuracy
from artok.pipeline import load_pipeline
from artok.recipes.quickstart import real_images
from artok.sampling import generate

p = argparse.ArgumentParser()
p.add_argument("--run", required=True)  # a tokenizer probe's folder (classifier.pt)
p.add_argument("--pipeline", required=True)
p.add_argument("--per-class", type=int, default=20)
p.add_argument("--cfg", type=float, default=3.0)
a = p.parse_args()
torch.set_num_threads(2)
clf = torch.load(Path(a.run) / "classifier.pt", weights_only=False)
tok, gen = load_pipeline(a.pipeline, "cpu")
x, y = real_images(10 * a.per_class * 3, split="test", image_size=tok.config.image_size, style="scattered")
keep = torch.cat([torch.nonzero(y == c).flatten()[: a.per_class] for c in range(10)])
x, y = x[keep], y[keep]
with torch.no_grad():
    ids = tok.tokenize(x)
rows = {}
for k in range(len(ids)):
    out = generate(gen, tok, y, cfg_scale=a.cfg, prefix=ids[:k], generator=torch.Generator().manual_seed(0))
    acc, pc = accuracy(clf, out.images, y), per_class_accuracy(clf, out.images, y, 10)
    rows[k] = {"accuracy": acc, "per_class": pc}
    print(f"first {k} scale(s) real: accuracy {acc:.1%}, per class {' '.join(f'{c:.0%}' for c in pc)}", flush=True)
Path(a.pipeline).parent.joinpath("prefix_forcing.json").write_text(json.dumps(rows, indent=2))
