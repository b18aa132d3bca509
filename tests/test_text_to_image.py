"""Text-to-image HART: the text-encoder record, prompts → context → sampling → PNGs (``artok sample --prompt``),
with a tiny random Qwen2 built here (nothing downloaded)."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artok
from artok.cli import main as cli
from artok.config import ConfigError, TextEncoderConfig, hart_text_encoder
from artok.models.text_encoder import TextEncoder, TextEncoderUnavailable
from artok.pipeline import Pipeline, build_hart
from artok.sampling import generate_from_prompts, generate_hart
from tiny_text import build_tiny_text_encoder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return build_tiny_text_encoder(tmp_path_factory.mktemp("qwen2") / "tiny-qwen2")


def t2i_pipeline(path: Path, encoder_dir: Path, **record) -> Path:
    torch.manual_seed(0)
    gen = build_hart("tiny-hart-t2i")
    with torch.no_grad():
        for name, p in gen.named_parameters():  # O(1) random weights, so that samples depend on the prompt
            if not name.startswith("diffusion_head"):
                p.normal_(0, 0.3)
    tok = artok.build_tokenizer("tiny-hart-tokenizer")
    Pipeline(tok, gen, TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8, **record)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, encoder_dir):
    return t2i_pipeline(tmp_path_factory.mktemp("ckpt") / "t2i", encoder_dir)


# -- the encoder and its record ---------------------------------------------------------------------------

def test_encoder_contexts_follow_hart(encoder_dir):
    enc = TextEncoder(TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8))
    text = enc(["a red circle", "blue vertical stripes", "a red fox in snow"])
    assert text.context.shape == (3, 8, 16) and text.context.dtype == torch.float32
    assert text.mask.sum(1).tolist() == [3, 3, 5]  # one BPE token per word, right padded
    assert text.position_ids[0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]  # cumsum(mask) − 1
    assert torch.equal(enc(["a red circle"]).context, text.context[:1])
    # another hidden layer, and a system prompt whose states are dropped, give other contexts of the same shape
    earlier = TextEncoder(TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8, hidden_layer=1))
    system = TextEncoder(TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8, system_prompt="the of"))
    for other in (earlier, system):
        c = other(["a red circle"]).context
        assert c.shape == (1, 8, 16) and not torch.allclose(c, text.context[:1])
    assert enc.null_context(2) is None  # HART's zero context
    null = TextEncoder(TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8, null_prompt="")).null_context(2)
    assert null.context.shape == (2, 8, 16) and null.mask.sum() == 0


def test_record_round_trips_with_the_pipeline(pipeline, encoder_dir):
    pipe = artok.from_pretrained(pipeline)
    assert pipe.text_conditioned and pipe.directory == Path(pipeline)
    assert pipe.text_encoder == TextEncoderConfig(name_or_path=str(encoder_dir), max_length=8)
    assert json.loads((Path(pipeline) / "text_encoder.json").read_text())["hidden_layer"] == -1
    with pytest.raises(ConfigError, match="max_length must be >= 1"):
        TextEncoderConfig(max_length=0)
    hart = hart_text_encoder()
    assert (hart.name_or_path, hart.max_length, hart.hidden_layer, hart.null_prompt, hart.context_dim) == (
        "mit-han-lab/Qwen2-VL-1.5B-Instruct", 300, -1, None, 1536)
    assert hart.system_prompt.startswith("Given a user prompt") and hart.system_prompt.endswith("User Prompt:\\n")


def test_convert_hart_writes_the_record(tmp_path):
    from test_convert_hart import release_folders

    tok_dir, llm_dir = release_folders(tmp_path, "hart_b")
    assert cli(["convert", "hart", str(tok_dir), str(llm_dir), str(tmp_path / "out")]) == 0
    pipe = artok.from_pretrained(tmp_path / "out")
    assert pipe.text_encoder == hart_text_encoder(max_length=pipe.generator.config.max_context_tokens,
                                                  context_dim=pipe.generator.config.context_dim)
    assert cli(["convert", "hart", str(tok_dir), str(llm_dir), str(tmp_path / "local"), "--text-encoder",
                "/models/qwen2"]) == 0
    assert artok.from_pretrained(tmp_path / "local").text_encoder.name_or_path == "/models/qwen2"


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_missing_weights_fail_at_once_saying_where_to_put_them(tmp_path, monkeypatch, env):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t0 = time.perf_counter()
    with pytest.raises(TextEncoderUnavailable, match=r"huggingface-cli download some-org/no-such-qwen2 --local-dir DIR"):
        TextEncoder(TextEncoderConfig(name_or_path="some-org/no-such-qwen2"))
    assert time.perf_counter() - t0 < 10, "an offline machine must not wait for download retries"
    with pytest.raises(TextEncoderUnavailable, match="folder .*missing-folder does not exist"):
        TextEncoder(str(tmp_path / "missing-folder"))


# -- prompts → images ---------------------------------------------------------------------------------------

def test_guidance_runs_against_the_recorded_null_prompt(pipeline, encoder_dir, tmp_path):
    pipe = artok.from_pretrained(pipeline)
    tok, gen = pipe.tokenizer.eval(), pipe.generator.eval()
    enc = TextEncoder(pipe.text_encoder, base_dir=pipe.directory)
    prompts = ["a red circle", "blue vertical stripes"]

    def draw(encoder, cfg):
        return generate_from_prompts(gen, tok, encoder, prompts, cfg_scale=cfg, top_k=1, return_logits=True,
                                     generator=torch.Generator().manual_seed(0))

    text = enc(prompts)
    direct = generate_hart(gen, tok, text.context, cfg_scale=3.0, top_k=1, generator=torch.Generator().manual_seed(0),
                           **text.as_kwargs())
    zero_null = draw(enc, 3.0)
    assert all(torch.equal(a, b) for a, b in zip(zero_null.ids, direct.ids))  # null None: HART's zero context
    assert torch.equal(zero_null.images, direct.images)
    empty = TextEncoder(pipe.text_encoder.replace(null_prompt=""), base_dir=pipe.directory)
    negative = TextEncoder(pipe.text_encoder.replace(null_prompt="white snow"), base_dir=pipe.directory)
    assert not torch.allclose(draw(empty, 3.0).logits[-1], zero_null.logits[-1])
    assert not torch.allclose(draw(negative, 3.0).logits[-1], draw(empty, 3.0).logits[-1])
    assert torch.equal(draw(negative, 0.0).logits[-1], draw(enc, 0.0).logits[-1])  # no guidance: no null branch


def test_sample_command_writes_pngs_and_prompts_jsonl(pipeline, tmp_path, capsys):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a red circle\n\nblue vertical stripes\na red fox in snow\n")

    def run(out, *extra):
        return cli(["sample", str(pipeline), "--prompt-file", str(prompt_file), "--per-prompt", "2", "--cfg", "4",
                    "--top-k", "0", "--top-p", "0", "--batch-size", "4", "--seed", "3", "--out", str(out), *extra])

    assert run(tmp_path / "a") == 0
    assert "wrote 6 samples" in capsys.readouterr().out
    files = sorted((tmp_path / "a").glob("*_prompt*.png"))
    assert [f.name for f in files] == [f"{i:06d}_prompt{i // 2:04d}.png" for i in range(6)]
    lines = [json.loads(line) for line in (tmp_path / "a" / "prompts.jsonl").read_text().splitlines()]
    assert [(x["file"], x["prompt"], x["seed"]) for x in lines] == [
        (f.name, p, 3 + i // 4) for i, (f, p) in enumerate(zip(files, [p for p in ["a red circle", "blue vertical "
                                                                  "stripes", "a red fox in snow"] for _ in range(2)]))]
    images = [np.asarray(Image.open(f)) for f in files]
    assert images[0].shape == (32, 32, 3) and (tmp_path / "a" / "grid.png").exists()
    assert not np.array_equal(images[0], images[2]), "different prompts should give different images"
    assert run(tmp_path / "b") == 0  # same seed → the same images
    assert all(np.array_equal(x, np.asarray(Image.open(tmp_path / "b" / f.name))) for x, f in zip(images, files))
    assert run(tmp_path / "a") == 2  # samples there, no --overwrite
    assert cli(["sample", str(pipeline), "--prompt", "a red circle", "--prompt", "a blue ring", "--top-k", "0",
                "--top-p", "0", "--out", str(tmp_path / "c")]) == 0
    assert len(list((tmp_path / "c").glob("*_prompt*.png"))) == 2


def test_sample_command_refuses_mismatched_conditions(pipeline, tmp_path, capsys):
    assert cli(["sample", str(pipeline), "--classes", "1", "--out", str(tmp_path / "a")]) == 2
    assert "text-conditioned generator: pass --prompt" in capsys.readouterr().err
    class_pipe = tmp_path / "c2i"
    Pipeline(artok.build_tokenizer("tiny-hart-tokenizer"), build_hart("tiny-hart-c2i")).save_pretrained(class_pipe)
    assert cli(["sample", str(class_pipe), "--prompt", "a red circle", "--out", str(tmp_path / "b")]) == 2
    assert "class-conditional generator (10 classes)" in capsys.readouterr().err
    no_record = tmp_path / "no-record"
    pipe = artok.from_pretrained(pipeline)
    Pipeline(pipe.tokenizer, pipe.generator).save_pretrained(no_record)
    assert cli(["sample", str(no_record), "--prompt", "a red circle", "--out", str(tmp_path / "c")]) == 2
    assert "no text-encoder record" in capsys.readouterr().err
    assert cli(["sample", str(pipeline), "--prompt", "a red circle", "--text-encoder", str(tmp_path / "nowhere"),
                "--out", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_edit_command_takes_a_prompt_on_a_text_pipeline(pipeline, tmp_path, capsys):
    size = artok.from_pretrained(pipeline).tokenizer.image_size
    rng = np.random.default_rng(0)
    image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2] = 255  # generate the top half
    Image.fromarray(mask).save(tmp_path / "mask.png")

    def run(out, prompt):
        return cli(["edit", str(pipeline), "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                    "--prompt", prompt, "--num", "2", "--cfg", "3", "--top-k", "0", "--top-p", "0", "--seed", "1",
                    "--out", str(tmp_path / out)])

    assert run("a", "a red circle") == 0
    assert "prompt 'a red circle'" in capsys.readouterr().out
    a = [np.asarray(Image.open(tmp_path / "a" / f"edit_{i:04d}.png")) for i in range(2)]
    assert (tmp_path / "a" / "grid.png").exists()
    assert run("b", "a red circle") == 0  # same seed and prompt → the same edits
    assert all(np.array_equal(x, np.asarray(Image.open(tmp_path / "b" / f"edit_{i:04d}.png"))) for i, x in enumerate(a))
    assert run("c", "blue vertical stripes") == 0
    c = np.asarray(Image.open(tmp_path / "c" / "edit_0000.png"))
    top, bottom = slice(0, size // 2), slice(size // 2, size)
    assert not np.array_equal(a[0][top], c[top]), "another prompt should change the generated half"
    # the kept half comes from the input's ids and residual under either prompt: far closer than the generated one
    assert np.abs(a[0][bottom].astype(int) - c[bottom]).mean() < np.abs(a[0][top].astype(int) - c[top]).mean()
