"""`artok quickstart` at its smallest budget: every stage runs and the report shows real images and metrics."""
import pytest
import json
import re

import numpy as np
from PIL import Image

from artok.cli import main


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_quickstart_smallest_budget(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--minutes", "0.3", "--samples-per-class", "5", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 7):
        assert f"[{stage}/6]" in printed
    assert "report:" in printed and str(out / "report.html") in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokenizer"]["steps"] > 0 and metrics["generator"]["steps"] > 0
    assert 0 < metrics["tokenizer"]["psnr"] < 100
    from artok.registry import tokenizer_config

    assert len(metrics["tokenizer"]["codebook_usage_per_scale"]) == len(tokenizer_config("quickstart-var-vqvae").quantizer.scales)
    assert 0.0 <= metrics["samples"]["class_accuracy"] <= 1.0
    assert metrics["samples"]["classifier_accuracy_on_real_images"] > 0.5, "the scoring classifier must work"
    assert metrics["encode"]["bytes_per_image"] > 0
    assert 0.0 <= metrics["samples"]["classifier_accuracy_on_reconstructions"] <= 1.0
    curve = metrics["generator"]["class_accuracy_curve"]
    assert curve and curve[-1]["step"] == metrics["generator"]["steps"], curve  # scored during training and at the end
    assert all(0.0 <= point["sample_accuracy_min_class"] <= point["sample_accuracy"] <= 1.0 for point in curve)
    assert metrics["samples"]["fid"] > 0 and metrics["samples"]["fid_real_train"] > 0
    assert 0.0 <= metrics["samples"]["precision"] <= 1.0 and 0.0 <= metrics["samples"]["recall"] <= 1.0

    html = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 4, sources
    for src in sources:  # every image the report shows decodes, and is a picture, not a blank canvas
        img = np.asarray(Image.open(out / src).convert("RGB"))
        assert img.shape[0] > 20 and img.shape[1] > 20 and img.std() > 5, src
    grid = np.asarray(Image.open(out / "samples_per_class.png"))
    assert grid.shape[0] >= 10 * 16  # one row per class
    md = (out / "report.md").read_text()
    assert "sample class accuracy" in md and "circle" in md
