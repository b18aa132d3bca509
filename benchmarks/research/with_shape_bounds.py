"""Run a research probe with other drawing bounds for the procedural shapes, to ask whether the quickstart's
data limits its generator: MIN_STRIPE (half a stripe period, px at the output size) and MIN_RING (ring
width, px) replace artok.data.builtin's bounds (2.5 and 2.0) in this process only; CLF names the classifier
cache the probe uses instead of runs/qs/clf16.pt (a classifier trained on the redrawn shapes). The README's
rows:

    MIN_STRIPE=4 MIN_RING=3 CLF=runs/qs/clf16_A.pt python benchmarks/research/with_shape_bounds.py \\
        benchmarks/research/quickstart_tokenizer_probe.py --out runs/qs/tA
    MIN_STRIPE=4 MIN_RING=3 CLF=runs/qs/clf16_A.pt python benchmarks/research/with_shape_bounds.py \\
        benchmarks/research/quickstart_generator_probe.py --run runs/qs/tA --out runs/qs/gA2 --lr 6e-3 --sweep 3:0 \\
        --per-class 20 --train '{"max_minutes": null, "schedule_over": "steps", "max_steps": 726}'
"""
import os
import sys

import artok.data.builtin as builtin

if os.environ.get("MIN_STRIPE"):
    builtin.MIN_STRIPE = float(os.environ["MIN_STRIPE"])
if os.environ.get("MIN_RING"):
    builtin.MIN_RING_WIDTH = float(os.environ["MIN_RING"])
script = sys.argv[1]
source = open(script).read().replace('"runs/qs/clf16.pt"', repr(os.environ.get("CLF", "runs/qs/clf16.pt")))
sys.argv = [script] + sys.argv[2:]
exec(compile(source, script, "exec"), {"__name__": "__main__"})
