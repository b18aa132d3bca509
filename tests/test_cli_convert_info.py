"""`artok convert var-vqvae` and `artok info` on the fixture checkpoint."""
import pytest
import subprocess
import sys

import torch

import artok
from artok.cli import main
from conftest import fixture_weights, load_fixture, uint8_to_pm1


def test_convert_then_info_then_load(tmp_path, capsys):
    out = tmp_path / "var-vqvae"
    assert main(["convert", "var-vqvae", str(fixture_weights("var/vqvae")), str(out),
                 "--scales", "1", "2", "3", "4", "5", "6", "8"]) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tokens / image  155" in text and "codebook        256 codes" in text
    assert "scales          1, 2, 3, 4, 5, 6, 8" in text
    io, _ = load_fixture("var/vqvae")
    tok = artok.from_pretrained(out)
    ids = tok.tokenize(uint8_to_pm1(io["input_uint8"]))
    assert torch.equal(torch.cat(ids, 1), io["idx_all"])


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    args = ["convert", "var-vqvae", str(fixture_weights("var/vqvae")), str(tmp_path), "--scales", "1", "2", "4", "8"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "artok.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "convert" in res.stdout and "info" in res.stdout
    res = subprocess.run([sys.executable, "-m", "artok.cli", "info", "/nonexistent"], capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr
