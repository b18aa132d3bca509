"""The README's editing picture: a pipeline in-paints the centre of a few shapes, under their own class and under
another one. One row per input: the input, the mask, ``--per-row`` edits under the input's class, then as
many under ``--other`` (default: vertical stripes, the class the quickstart draws best).

    python benchmarks/edit_demo.py --pipeline runs/qs/g8/pipeline --out docs/images/edit-demo.png
"""
import argparse

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from artok.commands.edit import edit_tiles
from artok.data import ProceduralShapes
from artok.data.transforms import pil_to_tensor
from artok.data.builtin import PROCEDURAL_CLASSES
from artok.pipeline import load_pipeline
from artok.sampling import edit
from artok.sampling.to_disk import to_uint8

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--pipeline", required=True)
p.add_argument("--out", required=True)
p.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 4])
p.add_argument("--other", type=int, default=PROCEDURAL_CLASSES.index("vertical stripes"))
p.add_argument("--per-row", type=int, default=3)
p.add_argument("--cfg", type=float, default=3.0)
p.add_argument("--zoom", type=int, default=4)
a = p.parse_args()
tok, gen = load_pipeline(a.pipeline, "cpu")
size = tok.config.image_size
shapes = ProceduralShapes(num_samples=100, image_size=size, seed=1)  # the test split's drawing
mask = torch.zeros(size, size)
mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1  # the centre half
tiles = []
for c in a.classes:
    image, label = next(shapes[i] for i in range(len(shapes)) if shapes[i][1] == c)
    x = pil_to_tensor(image)[None]
    n = a.per_row
    own = edit(gen, tok, x.expand(n, -1, -1, -1), mask, torch.full((n,), c), cfg_scale=a.cfg,
               generator=torch.Generator().manual_seed(0)).images
    other = edit(gen, tok, x.expand(n, -1, -1, -1), mask, torch.full((n,), a.other), cfg_scale=a.cfg,
                 generator=torch.Generator().manual_seed(0)).images
    tiles.extend(edit_tiles(x, mask, np.concatenate([to_uint8(own), to_uint8(other)])))
grid = make_grid(torch.stack(tiles).permute(0, 3, 1, 2), nrow=2 + 2 * a.per_row, padding=1, pad_value=255)
img = Image.fromarray(grid.permute(1, 2, 0).numpy())
img = img.resize((img.width * a.zoom, img.height * a.zoom), Image.NEAREST)
img.save(a.out)
print(f"wrote {a.out}: rows {[PROCEDURAL_CLASSES[c] for c in a.classes]}; columns: input, mask, "
      f"{a.per_row} x own class, {a.per_row} x {PROCEDURAL_CLASSES[a.other]}")
