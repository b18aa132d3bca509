"""Text-conditioned HART training: captions from folders, tar shards, Hugging Face datasets and the procedural
shapes; captions and the text encoder's contexts stored beside the ids (``artok encode --text-encoder``);
caption dropout; resume; the exported pipeline samples from prompts. A tiny random Qwen2 is built here."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artok
from artok.cli import main as cli
from artok.config import ConfigError, GeneratorTrainConfig, TextEncoderConfig
from artok.data import ImageFolder, ProceduralShapes, TarShards, build_dataset
from artok.data.captions import CaptionStore
from artok.training.generator_trainer import train_generator
from tiny_text import build_tiny_text_encoder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny text encoder, a hybrid tokenizer, and 24 procedural shapes encoded with captions and contexts."""
    root = tmp_path_factory.mktemp("t2i")
    encoder = build_tiny_text_encoder(root / "qwen2")
    torch.manual_seed(0)
    tok = artok.build_tokenizer("tiny-hart-tokenizer").eval()
    torch.nn.init.normal_(tok.quantizer.codebook.embedding.weight)
    tok.save_pretrained(root / "tok")
    assert cli(["encode", str(root / "tok"), "--data", "procedural", "--num-samples", "24", "--out",
                str(root / "tokens"), "--shard-size", "16", "--num-workers", "0", "--cpu", "--text-encoder",
                str(encoder), "--text-max-length", "8"]) == 0
    return root, encoder


def config(root, out, **fields):
    data = {"generator": "tiny-hart-t2i", "tokenizer": str(root / "tok"),
            "data": {"tokens": str(root / "tokens"), "num_workers": 0},
            "recipe": {"samples_per_class": 1, "scale_lr": False, "sample_classes": [0, 1]},
            "train": {"out_dir": str(out), "max_steps": 6, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0,
                      "log_every": 2, "sample_every": 6, "save_every": 3, "trackers": ["none"], "ema_decay": 0.9}}
    for k, v in fields.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return GeneratorTrainConfig.from_dict(data)


# -- captions from every kind of source --------------------------------------------------------------------

def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_captions_of_folders_tars_hf_datasets_and_shapes(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, text in enumerate(["a red circle", "blue vertical stripes"]):
        (folder / f"{i}.png").write_bytes(_png((255, 0, 0)))
        (folder / f"{i}.txt").write_text(text + "\n")
    (folder / "2.png").write_bytes(_png((0, 0, 255)))  # no caption
    ds = ImageFolder(folder)
    assert [ds.caption(0), ds.caption(1)] == ["a red circle", "blue vertical stripes"]
    with pytest.raises(artok.data.BadImageError, match="no caption"):
        ds.caption(2)
    train = build_dataset(artok.config.DataConfig(source="folder", path=str(folder)), image_size=8, captions=True)
    item = train[(2, 0)]  # the uncaptioned image is replaced and reported, as an unreadable file is
    assert item["caption"] in ("a red circle", "blue vertical stripes") and "no caption" in item["bad_files"][0]

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, members in {"a": {"png": _png((0, 255, 0)), "txt": b"a green ring"},
                             "b": {"png": _png((0, 0, 0)), "json": json.dumps({"text": "a black cross"}).encode()}
                             }.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tars = TarShards(str(shard), caption_key="text")
    assert [tars.caption(0), tars.caption(1)] == ["a green ring", "a black cross"]
    with pytest.raises(artok.data.BadImageError, match="no text field 'caption'"):
        TarShards(str(shard)).caption(1)

    shapes = ProceduralShapes(num_samples=20, image_size=16)
    assert shapes.caption(0).endswith("circle") and shapes.caption(6).endswith(" vertical stripes")
    assert not shapes.caption(6).startswith("a ")
    assert len({shapes.caption(i) for i in range(20)}) > 10  # colours vary

    datasets = pytest.importorskip("datasets")
    hf = tmp_path / "hf"
    datasets.Dataset.from_dict({"image": [{"bytes": _png((255, 255, 0)), "path": None}], "text": ["a yellow square"]},
                               features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
                               ).save_to_disk(str(hf))
    from artok.data import HFImageDataset

    assert HFImageDataset(str(hf), caption_key="text").caption(0) == "a yellow square"
    with pytest.raises(artok.data.BadImageError, match="no caption column 'caption'"):
        HFImageDataset(str(hf)).caption(0)


def test_encode_stores_captions_and_fp16_contexts_with_the_encoder_identity(setup):
    root, encoder = setup
    store = CaptionStore(root / "tokens")
    shapes = ProceduralShapes(num_samples=24, image_size=32)
    assert store.captions == [shapes.caption(i) for i in range(24)]
    assert store.context_shape == (8, 16) and store.contexts.dtype["context"].base == np.float16
    manifest = json.loads((root / "tokens" / "manifest.json").read_text())
    identity = manifest["text"]["identity"]
    assert identity["name_or_path"] == str(encoder) and identity["max_length"] == 8 and len(identity["weights_sha256"]) == 64
    enc = artok.models.text_encoder.TextEncoder(TextEncoderConfig(name_or_path=str(encoder), max_length=8))
    context, mask = store.context(5)
    fresh = enc([shapes.caption(5)])
    assert torch.equal(mask, fresh.mask[0])
    assert torch.allclose(context, fresh.context[0], atol=2e-3, rtol=1e-3)  # fp16 storage


# -- training -----------------------------------------------------------------------------------------------

def test_trains_on_stored_contexts_and_exports_a_prompt_pipeline(setup, tmp_path):
    root, encoder = setup
    short = {"max_steps": 4, "sample_every": 4, "save_every": 4}
    result = train_generator(config(root, tmp_path / "full", train=short), progress=False)
    logs = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "diffusion", "accuracy"} <= logs[0].keys() and logs[-1]["ce"] < logs[0]["ce"]
    assert (tmp_path / "full" / "samples" / "step_0000004.png").exists() and result.step == 4
    pipe = artok.from_pretrained(tmp_path / "full" / "pipeline")
    assert pipe.text_encoder.name_or_path == str(encoder) and pipe.text_encoder.context_dim == 16

    def draw(out):
        return cli(["sample", str(tmp_path / "full" / "pipeline"), "--prompt", "a red circle", "--prompt",
                    "blue vertical stripes", "--cfg", "2", "--top-k", "0", "--top-p", "0", "--seed", "1", "--out",
                    str(out)])

    assert draw(tmp_path / "s1") == 0 and draw(tmp_path / "s2") == 0
    files = sorted((tmp_path / "s1").glob("*_prompt*.png"))
    assert len(files) == 2 and (tmp_path / "s1" / "prompts.jsonl").exists()
    assert all(np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "s2" / f.name)))
               for f in files)


@pytest.mark.slow
def test_resumed_text_run_ends_identical_to_uninterrupted(setup, tmp_path):
    """Stopped after its step-2 checkpoint and resumed to 4: the same weights as one run to 4 (a constant LR, so
    that the shorter run's schedule is the same)."""
    root, _ = setup
    steady = {"lr_schedule": "constant", "max_steps": 4, "save_every": 2, "sample_every": 4}
    train_generator(config(root, tmp_path / "full", train=steady), progress=False)
    train_generator(config(root, tmp_path / "resumed", train={**steady, "max_steps": 2}), progress=False)
    train_generator(config(root, tmp_path / "resumed", train=steady), progress=False)
    a = artok.from_pretrained(tmp_path / "full" / "pipeline").generator.state_dict()
    b = artok.from_pretrained(tmp_path / "resumed" / "pipeline").generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_trains_on_captioned_images_with_a_null_prompt(setup, tmp_path):
    """On-the-fly tokenization of captioned images, the encoder run per batch; dropped captions become the
    encoded null prompt, which the exported record keeps for guidance."""
    root, encoder = setup
    cfg = config(root, tmp_path / "run", data={"tokens": None, "images": {"source": "procedural", "num_samples": 16}},
                 text_encoder={"name_or_path": str(encoder), "max_length": 8, "null_prompt": ""},
                 generator=artok.config.presets.hart_config("tiny-hart-t2i", class_dropout=0.5).to_dict(),
                 train={"max_steps": 2, "batch_size": 4, "sample_every": 2, "save_every": 2})
    result = train_generator(cfg, progress=False)
    assert result.step == 2 and np.isfinite(result.final_loss)
    record = artok.from_pretrained(tmp_path / "run" / "pipeline").text_encoder
    assert record.null_prompt == "" and record.max_length == 8


def test_text_training_checks(setup, tmp_path):
    root, encoder = setup
    with pytest.raises(ConfigError, match="stores contexts of another text encoder"):
        train_generator(config(root, tmp_path / "a", text_encoder={"name_or_path": str(encoder), "max_length": 6}),
                        progress=False)
    with pytest.raises(ConfigError, match="needs the text encoder that turns their captions"):
        config(root, tmp_path / "b", data={"tokens": None, "images": {"source": "procedural"}}).check_runnable()
    with pytest.raises(ConfigError, match="the generator is class-conditional"):
        config(root, tmp_path / "c", generator="tiny-hart-c2i", text_encoder={"name_or_path": str(encoder)})
    big = artok.config.presets.hart_config("tiny-hart-t2i", context_dim=32).to_dict()
    with pytest.raises(ConfigError, match="stores contexts of 8 tokens x 16"):
        train_generator(config(root, tmp_path / "d", generator=big), progress=False)
