"""`artok quickstart` on other drawings of the shapes, to ask what limits its class accuracy: the data or the
recipe. ``--shapes`` picks the drawing for this process (tokenizer data, encoded data and the scoring
classifier's images alike); the arguments after ``--`` go to ``artok quickstart``:

- ``scattered``: the ``procedural`` set (any colours on gradient backgrounds, anywhere in the image);
- ``flat-scattered``: the centred style's eight named colours on flat backgrounds, but placed and sized as
  the scattered shapes are (the colour changed, not the layout);
- ``centred``: the ``procedural-centred`` set the quickstart uses (flat colours, larger, near the centre).

The README's rows (two at a time, one thread each, 10 minutes):

    OMP_NUM_THREADS=1 python benchmarks/research/quickstart_shape_styles.py --shapes scattered -- \\
        --out runs/q17/scattered --minutes 10 --no-progress
    OMP_NUM_THREADS=1 python benchmarks/research/quickstart_shape_styles.py --shapes flat-scattered -- \\
        --out runs/q17/flat --minutes 10 --no-progress
    OMP_NUM_THREADS=1 python benchmarks/research/quickstart_shape_styles.py --shapes centred -- \\
        --out runs/q17/centred --minutes 10 --no-progress
"""
import argparse

import artok.data.builtin as builtin
import artok.recipes.quickstart as quickstart
from artok.cli import main

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--shapes", choices=("scattered", "flat-scattered", "centred"), required=True)
p.add_argument("quickstart_args", nargs=argparse.REMAINDER, help="-- then artok quickstart's arguments")
a = p.parse_args()
if a.shapes != "centred":
    quickstart.STYLE = "scattered"
if a.shapes == "flat-scattered":  # the centred style's colours, drawn where and as large as the scattered shapes
    centred_colours = builtin._foreground
    builtin._foreground = lambda rng, style: centred_colours(rng, "centred")
args = a.quickstart_args[1:] if a.quickstart_args[:1] == ["--"] else a.quickstart_args
raise SystemExit(main(["quickstart", *args]))
