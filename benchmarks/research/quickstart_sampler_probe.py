"""Research probe: class accuracy of a trained probe generator (runs/qs/gN/pipeline) under sampler settings
cfg:top_k[:temperature], 20 samples a class, scored by runs/qs/clf16.pt. The README's figures:

    python benchmarks/research/quickstart_sampler_probe.py runs/qs/g8 "3:0:0.5,3:0:0.3,3:1,1:0:0.5,6:0:1,6:0:0.5"
"""
import sys, torch
from pathlib import Path
from artok.pipeline import load_pipeline
from artok.sampling import generate
from artok.metrics.classifier import accuracy, per_class_accuracy
torch.set_num_threads(1)
run, specs = sys.argv[1], sys.argv[2].split(",")
clf = torch.load("runs/qs/clf16.pt", weights_only=False)
tok, gen = load_pipeline(Path(run) / "pipeline", "cpu")
for spec in specs:
    parts = spec.split(":")
    c, k, temp = float(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else 1.0
    labels = torch.arange(10).repeat_interleave(20)
    imgs = torch.cat([generate(gen, tok, labels[i:i+100], cfg_scale=c, top_k=k, temperature=temp,
                               generator=torch.Generator().manual_seed(i)).images for i in range(0, 200, 100)])
    pc = per_class_accuracy(clf, imgs, labels, 10)
    print(f"{spec:>12}: {accuracy(clf, imgs, labels):.1%} min {min(pc):.0%} | " + " ".join(f"{x:.0%}" for x in pc), flush=True)
