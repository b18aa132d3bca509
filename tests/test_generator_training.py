"""Generator training from encoded shards: learning, exact resume, data checks, progressive scales, export."""
import numpy as np
import pytest
import torch

import artok
from artok import build_tokenizer
from artok.config import ConfigError, GeneratorTrainConfig
from artok.data.encode import encode_dataset
from artok.data.tokens import TokenDataset
from artok.training.generator_trainer import train_generator
from artok.training.objectives.generator import active_scales
from artok.training.objectives.var import VarObjective
from artok.training.token_data import TokenTrainingSet


class Images(torch.utils.data.Dataset):
    def __init__(self, n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 4


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    tok = build_tokenizer("tiny-var-vqvae").eval()
    torch.nn.init.normal_(tok.quantizer.codebook.embedding.weight)  # spread codes so ids carry information
    tok.save_pretrained(root / "tok")
    encode_dataset(tok, Images(), root / "tokens", image_size=32, shard_size=16, batch_size=8, progress=False)
    encode_dataset(tok, Images(n=8), root / "tokens_hflip", image_size=32, augment="hflip", progress=False)
    return root


def config(root, out, **train):
    train = {"out_dir": str(out), "max_steps": 4, "batch_size": 8, "lr": 2e-2, "warmup_steps": 0,
             "log_every": 2, "sample_every": 1000, "save_every": 2, "trackers": ["none"], "ema_decay": 0.9, **train}
    return GeneratorTrainConfig.from_dict({
        "generator": "tiny-var", "tokenizer": str(root / "tok"), "data": {"tokens": str(root / "tokens"),
                                                                           "num_workers": 0},
        "train": train, "recipe": {"sample_classes": [0, 1], "samples_per_class": 1, "scale_lr": False}})


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_loss_falls_and_pipeline_is_exported(encoded, tmp_path):
    result = train_generator(config(encoded, tmp_path / "run", max_steps=30, log_every=5, save_every=30),
                             progress=False)
    losses = [r["loss"] for r in (__import__("json").loads(l) for l in
                                  (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "loss_curves.png").exists()
    assert (tmp_path / "run" / "samples" / "step_0000030.png").exists()
    pipe = artok.from_pretrained(tmp_path / "run" / "pipeline")
    assert isinstance(pipe, artok.Pipeline)
    ema = result.ema.shadow.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in pipe.generator.state_dict().items()), "export holds EMA weights"
    assert pipe.sampling is None  # no recipe.export_sampling: artok sample uses VAR's settings


def test_export_sampling_records_the_recipes_settings_in_the_pipeline(encoded, tmp_path):
    cfg = config(encoded, tmp_path / "run", max_steps=2, save_every=2)
    cfg = cfg.replace(recipe=cfg.recipe.replace(export_sampling=True, sample_cfg=3.0, sample_top_k=50,
                                                sample_top_p=0.9))
    train_generator(cfg, progress=False)
    assert artok.from_pretrained(tmp_path / "run" / "pipeline").sampling == {"cfg": 3.0, "top_k": 50, "top_p": 0.9}


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_resumed_run_ends_identical_to_uninterrupted(encoded, tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint, started again, ends bit-identical to one never stopped."""
    straight = train_generator(config(encoded, tmp_path / "a", max_steps=4), progress=False)
    real_loss, calls = VarObjective.token_loss, []

    def killed_at_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(VarObjective, "token_loss", killed_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_generator(config(encoded, tmp_path / "b", max_steps=4), progress=False)
    monkeypatch.setattr(VarObjective, "token_loss", real_loss)
    resumed = train_generator(config(encoded, tmp_path / "b", max_steps=4), progress=False)
    assert resumed.step == 4
    a, b = weights(straight.generator), weights(resumed.generator)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    a, b = weights(straight.ema.shadow), weights(resumed.ema.shadow)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tokens_from_another_tokenizer_are_refused(encoded, tmp_path):
    other = build_tokenizer("tiny-var-vqvae")
    other.save_pretrained(tmp_path / "other")
    cfg = config(encoded, tmp_path / "run").replace(tokenizer=str(tmp_path / "other"))
    with pytest.raises(ConfigError, match="different tokenizer weights"):
        train_generator(cfg, progress=False)


def test_labels_beyond_num_classes_are_refused(encoded, tmp_path):
    cfg = config(encoded, tmp_path / "run")
    cfg = cfg.replace(generator=cfg.generator.replace(num_classes=3),
                      recipe=cfg.recipe.replace(sample_classes=(0,)))
    with pytest.raises(ConfigError, match="labels up to 3.*num_classes=3"):
        train_generator(cfg, progress=False)


def test_missing_tokenizer_or_data():
    with pytest.raises(ConfigError, match="tokenizer"):
        GeneratorTrainConfig().check_runnable()
    with pytest.raises(ConfigError, match="progressive"):
        GeneratorTrainConfig.from_dict({"generator": "tiny-var", "recipe": {"progressive_start": 9,
                                                                            "progressive_steps": 10}})


def test_random_view_per_image_per_epoch(encoded):
    tokens = TokenDataset(encoded / "tokens_hflip")
    assert len(tokens) == 16
    ds = TokenTrainingSet(tokens, seed=0, views="random")
    assert len(ds) == 8 and ds.counts.tolist() == [2] * 8
    all_views = TokenTrainingSet(tokens, views="all")
    assert len(all_views) == 16
    # over many epochs each image shows both of its views, and the label always belongs to that image
    seen = {(ds.starts[3] + v) for v in range(2)}
    picks = {int(ds.starts[3]) + int(torch.equal(torch.cat(ds[(3, e)]["ids"]), torch.cat(tokens[int(ds.starts[3]) + 1].ids)))
             for e in range(20)}
    assert picks == {int(s) for s in seen}
    assert all(ds[(3, e)]["label"] == 3 for e in range(5))


def test_progressive_schedule():
    steps = [active_scales(s, num_scales=4, start=2, steps=30) for s in range(0, 40, 5)]
    assert steps[0] == 2 and steps[-1] == 4 and steps == sorted(steps)
    assert active_scales(100, num_scales=4, start=0, steps=0) == 4


def test_shipped_training_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).parent.parent / "configs"
    paths = sorted((root / "train").glob("var-d*.yaml")) + [root / "tiny" / "train-var-generator.yaml"]
    assert len(paths) >= 5
    for path in paths:
        cfg = GeneratorTrainConfig.from_yaml(path)
        cfg.check_runnable()
        assert cfg.train.betas == (0.9, 0.95) and cfg.train.weight_decay in (0.0, 0.05)
    fsdp = load_config_from_file(str(root / "accelerate" / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP"  # its units and a real run: tests/test_fsdp.py


TWO_PROCESS_RUN = '''
import os, sys
from pathlib import Path


def run(root, out_name, max_steps):
    from safetensors.torch import save_file
    from artok.config import GeneratorTrainConfig
    from artok.training.generator_trainer import train_generator

    cfg = GeneratorTrainConfig.from_dict({
        "generator": "tiny-var", "tokenizer": str(root / "tok"),
        "data": {"tokens": str(root / "tokens"), "num_workers": 0},
        "recipe": {"sample_classes": [0], "samples_per_class": 1, "scale_lr": False},
        "train": {"out_dir": str(root / out_name), "batch_size": 4, "max_steps": max_steps, "log_every": 1,
                  "sample_every": 100, "save_every": 2, "trackers": ["none"], "ema_decay": 0.9,
                  "lr_schedule": "constant", "warmup_steps": 0, "lr": 1e-2}})
    result = train_generator(cfg, progress=False)
    state = {f"model.{k}": v for k, v in result.generator.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in result.ema.shadow.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()},
              str(root / out_name / f"final_rank{os.environ['RANK']}.safetensors"))


if __name__ == "__main__":
    import socket
    from accelerate import notebook_launcher

    def launch(*args):
        with socket.socket() as s:  # a free port, so parallel test runs do not collide on 29500
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        notebook_launcher(run, args, num_processes=2, use_port=port)

    root = Path(sys.argv[1])
    launch(root, "uninterrupted", 4)
    launch(root, "resumed", 2)   # stop after 2 steps
    launch(root, "resumed", 4)   # resume from out_dir, continue to 4
'''


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_two_process_training_resumes_identically(encoded, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    for name in ("tok", "tokens"):
        shutil.copytree(encoded / name, tmp_path / name)
    script = tmp_path / "two_process.py"
    script.write_text(TWO_PROCESS_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {name: [load_file(str(tmp_path / name / f"final_rank{r}.safetensors")) for r in (0, 1)]
            for name in ("uninterrupted", "resumed")}
    for name, (rank0, rank1) in runs.items():
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), f"{name}: the processes diverged"
    a, b = runs["uninterrupted"][0], runs["resumed"][0]
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], "the resumed run differs from the uninterrupted one"
    assert "resumed from" not in proc.stdout.split("uninterrupted")[0]


def test_class_conditional_hart_trains_with_its_diffusion_head(encoded, tmp_path):
    """HART from a hybrid tokenizer's shards (ids + float16 residuals): cross-entropy and diffusion loss fall
    together, the EMA pipeline is exported and samples through HART's sampler."""
    tok = build_tokenizer("tiny-hart-tokenizer").eval()
    torch.nn.init.normal_(tok.quantizer.codebook.embedding.weight)
    tok.save_pretrained(tmp_path / "hart_tok")
    encode_dataset(tok, Images(), tmp_path / "hart_tokens", image_size=32, shard_size=16, progress=False)
    assert "residual" in TokenDataset(tmp_path / "hart_tokens").dtype.names
    cfg = GeneratorTrainConfig.from_dict({
        "generator": "tiny-hart-c2i", "tokenizer": str(tmp_path / "hart_tok"),
        "data": {"tokens": str(tmp_path / "hart_tokens"), "num_workers": 0},
        "recipe": {"sample_classes": [0, 1], "samples_per_class": 1, "scale_lr": False},
        "train": {"out_dir": str(tmp_path / "run"), "max_steps": 12, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0,
                  "log_every": 4, "sample_every": 12, "save_every": 12, "trackers": ["none"], "ema_decay": 0.9}})
    assert cfg.is_hart
    result = train_generator(cfg, progress=False)
    logs = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "diffusion", "accuracy"} <= logs[0].keys()
    assert logs[-1]["ce"] < logs[0]["ce"]
    pipe = artok.from_pretrained(tmp_path / "run" / "pipeline")
    assert type(pipe.generator).__name__ == "HartTransformer"
    from artok.sampling import generate

    out = generate(pipe.generator, pipe.tokenizer, torch.tensor([0, 1]), cfg_scale=1.5,
                   generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images).all()
    assert (tmp_path / "run" / "samples" / "step_0000012.png").exists()
    assert result.step == 12


def test_hart_needs_a_hybrid_tokenizer(encoded, tmp_path):
    cfg = GeneratorTrainConfig.from_dict({
        "generator": "tiny-hart-c2i", "tokenizer": str(encoded / "tok"), "data": {"tokens": str(encoded / "tokens")},
        "recipe": {"sample_classes": [0]}, "train": {"out_dir": str(tmp_path / "run"), "trackers": ["none"]}})
    with pytest.raises(ConfigError, match="hybrid tokenizer"):
        train_generator(cfg, progress=False)
    with pytest.raises(ConfigError, match="needs the text encoder that turns their captions"):  # tests/test_text_training.py
        GeneratorTrainConfig.from_dict({"generator": "tiny-hart-t2i", "tokenizer": "x",
                                        "data": {"images": {"source": "procedural"}}}).check_runnable()


def test_weight_decay_spares_embeddings_norms_and_biases():
    from artok.registry import build_generator
    from artok.training.optim import weight_matrix_groups

    gen = build_generator("tiny-var")
    decay, no_decay = weight_matrix_groups(gen, 0.05)
    names = {id(p): n for n, p in gen.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    for table in ("class_embed.weight", "pos_embed", "level_embed.weight", "start_embed"):
        assert table in spared, table
    assert "word_embed.weight" in decayed and "head.weight" in decayed
    assert not any(n.endswith("bias") for n in decayed)
    assert all(gen.get_parameter(n).ndim >= 2 for n in decayed)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_bf16_and_gradient_accumulation(encoded, tmp_path):
    """bf16 autocast (the quantizer-side work stays fp32) with 2 accumulation micro-steps per optimizer step."""
    cfg = config(encoded, tmp_path / "run", max_steps=2, mixed_precision="bf16", gradient_accumulation_steps=2,
                 batch_size=4, save_every=2)
    result = train_generator(cfg, progress=False)
    assert result.step == 2
    logs = [__import__("json").loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(logs[-1]["loss"])
    assert all(torch.isfinite(p).all() for p in result.generator.parameters())


def test_evaluate_callback_scores_the_exported_weights_at_every_grid_and_the_end(encoded, tmp_path):
    """The trainer's ``evaluate`` hook: called with the EMA generator in eval mode and the tokenizer at every
    sample grid and at the last step; what it returns lands in metrics.jsonl at that step."""
    seen = []

    def evaluate(gen, tok):
        seen.append((gen.training, tok.codebook_size))
        return {"sample_accuracy": 0.25 * len(seen), "sample_accuracy_min_class": 0.0}

    train_generator(config(encoded, tmp_path / "run", max_steps=5, sample_every=2, save_every=5), progress=False,
                    evaluate=evaluate)
    records = [__import__("json").loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = [(r["step"], r["sample_accuracy"]) for r in records if "sample_accuracy" in r]
    assert scored == [(2, 0.25), (4, 0.5), (5, 0.75)], scored
    assert all(not training for training, _ in seen), "scored in eval mode"
    assert (tmp_path / "run" / "loss_curves.png").exists()


def test_hart_objective_draws_the_diffusion_ids_from_the_filtered_logits():
    """The ids whose codes the diffusion target subtracts: argmax for top_k=1, else draws inside the top-k and
    top-p set of ``filter_logits``. Continuous random logits have no ties at the k-th value, so nothing here
    depends on how ties are broken."""
    from artok.sampling import filter_logits
    from artok.training.objectives.hart import draw_ids

    logits = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw_ids(logits, top_k=1), logits.argmax(-1))
    g = torch.Generator().manual_seed(1)
    for top_k, top_p in ((5, 0.0), (5, 0.5), (0, 0.3)):
        kept = torch.isfinite(filter_logits(logits, top_k=top_k, top_p=top_p))
        draws = torch.stack([draw_ids(logits, top_k=top_k, top_p=top_p, generator=g) for _ in range(20)])
        assert kept.gather(-1, draws.permute(1, 2, 0)).all(), (top_k, top_p)
    again = [draw_ids(logits, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(2)) for _ in range(2)]
    assert torch.equal(*again)


@pytest.mark.parametrize("preset, kind", [("tiny-hart-c2i", "HartConfig"), ("tiny-var", "GeneratorConfig")])
def test_generator_flag_resolves_var_and_hart_presets_over_a_config(preset, kind, tmp_path, capsys):
    from artok.cli import main

    cfg = tmp_path / "train.yaml"
    GeneratorTrainConfig.from_dict({"generator": "tiny-var", "tokenizer": "tok", "data": {"tokens": "t"}}).to_yaml(cfg)
    assert main(["train", "generator", "--config", str(cfg), "--generator", preset, "--dry-run"]) == 0
    resolved = GeneratorTrainConfig.from_yaml(capsys.readouterr().out)
    assert type(resolved.generator).__name__ == kind
