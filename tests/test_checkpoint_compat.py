"""Directories saved by artok before the one-house restructure (commit 14cab48, tests/fixtures/checkpoints-v1)
still load, strictly, and give the outputs they gave then."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import artok

HERE = Path(__file__).parent / "fixtures" / "checkpoints-v1"


@pytest.fixture(scope="module")
def reference():
    return load_file(str(HERE / "reference.safetensors"))


def test_a_var_pipeline_saved_by_older_artok_loads_and_gives_its_old_outputs(reference):
    pipe = artok.from_pretrained(HERE / "var-pipeline")
    tok, gen = pipe.tokenizer, pipe.generator
    ids = tok.tokenize(reference["images"])
    for k, idx in enumerate(ids):
        assert torch.equal(idx, reference[f"ids{k}"])
    with torch.no_grad():
        logits = gen(tok.teacher_inputs(ids), torch.tensor([0, 1]))
    torch.testing.assert_close(logits, reference["logits"], rtol=1e-5, atol=1e-5)


def test_a_hart_pipeline_saved_by_older_artok_loads_and_gives_its_old_outputs(reference):
    pipe = artok.from_pretrained(HERE / "hart-pipeline")
    tok, hart = pipe.tokenizer, pipe.generator
    images = reference["himages"]
    ids = tok.tokenize(images)
    for k, idx in enumerate(ids):
        assert torch.equal(idx, reference[f"hids{k}"])
    with torch.no_grad():
        rec = tok.detokenize(ids, residual=tok.residual(images))
        out = hart(tok.teacher_inputs(ids), torch.tensor([0, 1]))
    torch.testing.assert_close(rec, reference["hrec"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits, reference["hart_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.hidden, reference["hart_hidden"], rtol=1e-5, atol=1e-5)
