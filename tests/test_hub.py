"""The Hugging Face Hub both ways, without a network: ``save_pretrained(push_to_hub=True)`` and ``artok push``
upload to a fake Hub on 127.0.0.1 (tests/fake_hub.py) through ``huggingface_hub``'s upload API, and
``from_pretrained`` downloads back through ``snapshot_download`` into the standard cache: same bytes, same
config, revisions, a pipeline in one call, a model card, and clear errors when the Hub cannot be reached."""
from __future__ import annotations

import json
import socket

import huggingface_hub.constants
import pytest
import torch

import artok
from artok.checkpoint import CheckpointError, model_card, push_to_hub
from artok.cli import main as cli
from artok.config import TokenizerTrainConfig
from artok.training.report import write_training_summary
from fake_hub import FakeHub


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub, the client pointed at it (HF_ENDPOINT) and a fresh standard cache (HF_HUB_CACHE)."""
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield fake
        assert not fake.unknown, f"the client called endpoints the fake Hub does not serve: {fake.unknown}"


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k}: max |Δ| {float((wa[k].double() - wb[k].double()).abs().max()):.3g}"


def test_a_tokenizer_pushed_with_save_pretrained_comes_back_identical_through_the_cache(hub, tmp_path, monkeypatch):
    tok = artok.build_tokenizer("tiny-var-vqvae")
    local = tok.save_pretrained(tmp_path / "tok", push_to_hub=True, repo_id="someone/tiny-tok")
    uploaded = hub.files("someone/tiny-tok")
    assert set(uploaded) == {"config.json", "model.safetensors", "README.md"}
    for name in ("config.json", "model.safetensors"):
        assert uploaded[name] == (local / name).read_bytes(), f"{name} was not uploaded byte for byte"
    assert not (local / "README.md").exists(), "the model card is uploaded, not written into the local folder"

    loaded = artok.from_pretrained("someone/tiny-tok")
    assert type(loaded) is type(tok) and loaded.config == tok.config
    assert_same_weights(loaded, tok)
    snapshots = list((tmp_path / "hf-cache" / "models--someone--tiny-tok" / "snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "model.safetensors").read_bytes() == uploaded["model.safetensors"]

    served = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the standard cache answers offline, without asking the Hub
    assert_same_weights(artok.from_pretrained("someone/tiny-tok"), tok)
    assert len(hub.requests) == served


def test_artok_push_uploads_a_pipeline_that_loads_in_one_call_and_keeps_revisions(hub, tmp_path, capsys):
    pipe = artok.Pipeline(artok.build_tokenizer("tiny-var-vqvae"), artok.build_generator("tiny-var"))
    pipe.save_pretrained(tmp_path / "pipe")
    assert cli(["push", str(tmp_path / "pipe"), "someone/tiny-pipe"]) == 0
    assert "someone/tiny-pipe" in capsys.readouterr().out
    assert {"config.json", "tokenizer/config.json", "tokenizer/model.safetensors", "generator/config.json",
            "generator/model.safetensors", "README.md"} <= set(hub.files("someone/tiny-pipe"))

    loaded = artok.from_pretrained("someone/tiny-pipe")
    assert isinstance(loaded, artok.Pipeline)
    assert_same_weights(loaded.tokenizer, pipe.tokenizer)
    assert_same_weights(loaded.generator, pipe.generator)

    # a second version on a branch: main keeps the first, revision= picks either
    with torch.no_grad():
        for p in pipe.generator.parameters():
            p.add_(1.0)
    pipe.save_pretrained(tmp_path / "pipe-v2", push_to_hub=True, repo_id="someone/tiny-pipe", revision="v2")
    v2 = artok.from_pretrained("someone/tiny-pipe", revision="v2")
    assert_same_weights(v2.generator, pipe.generator)
    main = artok.from_pretrained("someone/tiny-pipe", revision="main")
    assert_same_weights(main.generator, loaded.generator)
    assert not torch.equal(next(main.generator.parameters()), next(v2.generator.parameters()))


def test_the_model_card_says_what_it_is_how_to_load_it_and_how_it_was_trained(hub, tmp_path):
    tok = artok.build_tokenizer("tiny-var-vqvae")
    folder = tok.save_pretrained(tmp_path / "tok")
    cfg = TokenizerTrainConfig.from_dict({"tokenizer": "tiny-var-vqvae",
                                          "data": {"source": "procedural", "num_samples": 64}})
    write_training_summary(folder, cfg, steps=1234, global_batch=16, seconds=600.0,
                           metrics={"step": 1234, "loss": 0.125}, evaluation={"psnr": 23.5})
    artok.push_to_hub(folder, "someone/trained-tok")  # the top-level name
    card = hub.files("someone/trained-tok")["README.md"].decode()
    assert card == model_card(folder, "someone/trained-tok") and card in hub.cards  # its metadata was validated
    assert "library_name: artok" in card and "image-tokenizer" in card
    assert 'artok.from_pretrained("someone/trained-tok")' in card
    assert f"| codebook size | {tok.codebook_size} |" in card and "| scales | 1, 2, 4 |" in card
    parameters = sum(v.numel() for v in tok.state_dict().values())
    assert f"| parameters (with buffers) | {parameters:,} |" in card
    assert "source `procedural`" in card and "| optimizer steps" not in card and "optimizer steps: 1234" in card
    assert "| loss | 0.125 |" in card and "| psnr | 23.5 |" in card
    assert json.loads(card.split("```json\n")[1].split("```")[0])["config"] == tok.config.to_dict()

    pipe = artok.Pipeline(tok, artok.build_generator("tiny-var"))
    pipe.save_pretrained(tmp_path / "pipe")
    card = model_card(tmp_path / "pipe", "someone/pipe")
    assert "### tokenizer" in card and "### generator" in card and "artok sample someone/pipe --classes" in card
    assert "- var\n" in card and "- image-tokenizer\n" in card  # tagged with what the pipeline holds
    assert "Not recorded" in card  # no training.json: the card says so instead of inventing numbers


def test_hub_errors_are_one_clear_sentence(hub, tmp_path, monkeypatch):
    tok = artok.build_tokenizer("tiny-vq")
    folder = tok.save_pretrained(tmp_path / "tok")
    with pytest.raises(CheckpointError, match="needs repo_id"):
        tok.save_pretrained(tmp_path / "tok", push_to_hub=True)
    with pytest.raises(CheckpointError, match="could not be downloaded.*someone/missing"):
        artok.from_pretrained("someone/missing")
    push_to_hub(folder, "someone/tok")
    with pytest.raises(CheckpointError, match="at revision 'no-such-branch'.*--revision no-such-branch"):
        artok.from_pretrained("someone/tok", revision="no-such-branch")
    with pytest.raises(CheckpointError, match="no config.json"):
        push_to_hub(tmp_path, "someone/tok")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        push_to_hub(folder, "someone/tok")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a port where nothing listens: the Hub cannot be reached
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    with pytest.raises(CheckpointError, match="could not push .* to the Hugging Face Hub as 'someone/tok'.*hf auth"):
        push_to_hub(folder, "someone/tok")
    assert cli(["push", str(folder), "someone/tok"]) == 2
