"""FSDP: the sharding units of VAR, HART and tokenizers, the shipped config, and (slow) a real FSDP2 run on two
CPU processes launched with that config: train, save sharded checkpoints, resume exactly, export the gathered
full state dict that ``from_pretrained`` loads with the trained model's outputs."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import artok
from artok import build_tokenizer
from artok.config import ConfigError
from artok.data.encode import encode_dataset
from artok.registry import build_generator
from artok.training import fsdp

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def wrapped(module, names):
    """The modules of ``module`` that Accelerate's transformer-based policy (resolved for ``names``) makes FSDP
    units, as class names, besides the root."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    plugin.transformer_cls_names_to_wrap = names
    plugin.set_auto_wrap_policy(module)
    return sorted({type(m).__name__ for m in module.modules()
                   if plugin.auto_wrap_policy(module=m, recurse=False, nonwrapped_numel=0)})


def test_wrap_units_cover_var_and_hart_blocks_and_a_tokenizers_encoder_and_decoder():
    from artok.pipeline import build_hart
    from artok.training.objectives.hart import HartLosses

    var = build_generator("tiny-var")
    assert fsdp.wrap_units(var) == ["AdaLNBlock"]
    assert wrapped(var, fsdp.wrap_units(var)) == ["AdaLNBlock"]
    hart = HartLosses(build_hart("tiny-hart-c2i"))  # what HART training prepares
    assert fsdp.wrap_units(hart) == ["HartBlock"]
    assert wrapped(hart, fsdp.wrap_units(hart)) == ["HartBlock"]
    tok = build_tokenizer("tiny-var-vqvae")
    units = fsdp.wrap_units(tok)
    assert units == [type(tok.encoder).__name__, type(tok.decoder).__name__]
    assert wrapped(tok, units) == sorted(units)
    assert sum(isinstance(m, (type(tok.encoder), type(tok.decoder))) for m in tok.modules()) == 2


def test_shipped_fsdp_config_is_fsdp2_and_leaves_the_units_to_artok():
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIG))
    assert cfg.distributed_type == "FSDP"
    assert cfg.fsdp_config["fsdp_version"] == 2
    assert cfg.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in cfg.fsdp_config  # one class list cannot fit VAR and HART


def test_fsdp1_on_cpu_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        fsdp.check_launch(has_device=False)
    fsdp.check_launch(has_device=True)
    monkeypatch.setenv("FSDP_VERSION", "2")
    fsdp.check_launch(has_device=False)


def test_a_gan_tokenizers_adaptive_weight_is_refused_under_fsdp_and_units_are_per_model(monkeypatch):
    """The adaptive GAN weight takes gradients by a parameter that FSDP shards: refused before preparing. Each
    model prepared gets its own units (the discriminator has none of the tokenizer's), unless the config names
    them."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from artok.config import TokenizerTrainConfig
    from artok.losses import PatchDiscriminator
    from artok.training.objectives.tokenizer import TokenizerObjective

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    accelerator = SimpleNamespace(distributed_type=SimpleNamespace(name="FSDP"),
                                  state=SimpleNamespace(fsdp_plugin=plugin))
    cfg = TokenizerTrainConfig.from_yaml(ROOT / "configs" / "tiny" / "train-var-tokenizer.yaml")
    cfg.loss.gan_weight = 0.1
    with pytest.raises(ConfigError, match="adaptive_gan_weight: false with FSDP"):
        TokenizerObjective(cfg).prepare_extras(accelerator, schedule=None)
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)
    tok = build_tokenizer("tiny-var-vqvae")
    assert fsdp.set_wrap_units(accelerator, tok) == ["ConvEncoder", "ConvDecoder"]
    plugin.auto_wrap_policy = __import__("functools").partial(transformer_auto_wrap_policy, transformer_layer_cls=set())
    assert fsdp.set_wrap_units(accelerator, PatchDiscriminator()) == []  # after a first prepare bound the policy
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "ResnetBlock")
    plugin.transformer_cls_names_to_wrap = ["ResnetBlock"]
    assert fsdp.set_wrap_units(accelerator, tok) == ["ResnetBlock"]
    accelerator.distributed_type.name = "MULTI_CPU"
    assert fsdp.set_wrap_units(accelerator, tok) == []


def test_module_prefix_finds_the_exported_module_inside_the_prepared_one():
    from artok.pipeline import build_hart
    from artok.training.objectives.hart import HartLosses

    hart = build_hart("tiny-hart-c2i")
    assert fsdp.module_prefix(HartLosses(hart), hart) == "hart."
    assert fsdp.module_prefix(hart, hart) == ""
    with pytest.raises(ValueError):
        fsdp.module_prefix(hart, build_hart("tiny-hart-c2i"))


# -- a real FSDP2 run: `accelerate launch --config_file configs/accelerate/fsdp.yaml` on two processes -----------
FSDP_RUN = '''
import json, os, sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

import artok
from artok.config import ConfigError, GeneratorTrainConfig
from artok.training.generator_trainer import train_generator


def config(root, out, generator, tok, tokens, max_steps, ema_decay=None):
    return GeneratorTrainConfig.from_dict({
        "generator": generator, "tokenizer": str(root / tok), "data": {"tokens": str(root / tokens), "num_workers": 0},
        "recipe": {"sample_classes": [0, 1], "samples_per_class": 1, "scale_lr": False},
        "train": {"out_dir": str(root / out), "batch_size": 4, "max_steps": max_steps, "log_every": 1,
                  "sample_every": 2, "save_every": 2, "trackers": ["none"], "ema_decay": ema_decay,
                  "lr_schedule": "constant", "warmup_steps": 0, "lr": 1e-2}})


def probe_inputs(tok):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(tok.codebook_size, (2, pn * pn), generator=g) for pn in tok.scales]
    return tok.teacher_inputs(ids), torch.tensor([0, 1])


def logits(out):
    return out if torch.is_tensor(out) else out.logits


# the run ends with end_training, which destroys the process group: look at the sharded model instead, and keep
# the group for the next run in this process (a gloo group made a third time in one process hangs)
captured = {}


def capture(self):
    prepared = captured["prepared"] = self._models[0]
    net = prepared.hart if hasattr(prepared, "hart") else prepared  # HART trains HartLosses(hart)
    blocks = list(net.blocks)
    param = next(p for p in blocks[0].parameters() if p.ndim == 2)
    captured["describe"] = {
        "blocks_sharded": all(isinstance(b, FSDPModule) for b in blocks), "param_type": type(param).__name__,
        "local_rows": param.to_local().shape[0] if isinstance(param, DTensor) else None,
        "full_rows": param.shape[0], "world": int(os.environ["WORLD_SIZE"])}
    prefix = "hart." if net is not prepared else ""
    captured["weights"] = {k[len(prefix):]: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
                           for k, v in prepared.state_dict().items()}  # DTensor.full_tensor: a collective
    inputs, labels = probe_inputs(captured["tok"])
    prepared.unshard()  # the root unit's parameters (the blocks gather their own in their forward)
    with torch.no_grad():
        captured["live"] = logits(net.eval()(inputs, labels))  # a collective forward on every process
    prepared.reshard()


Accelerator.end_training = capture
root, rank = Path(sys.argv[1]), int(os.environ["RANK"])
report = {}
try:
    train_generator(config(root, "ema", "tiny-var", "tok", "tokens", 2, ema_decay=0.9), progress=False)
except ConfigError as e:
    report["ema_error"] = str(e)

runs = (("uninterrupted", "tiny-var", "tok", [4]), ("resumed", "tiny-var", "tok", [2, 4]),
        ("hart", "tiny-hart-c2i", "hart_tok", [2]))
for name, generator, tok, steps in runs:
    captured["tok"] = artok.from_pretrained(root / tok)
    for max_steps in steps:
        train_generator(config(root, name, generator, tok, tok.replace("tok", "tokens"), max_steps), progress=False)
    report[name] = captured["describe"]
    if rank == 0:
        exported = artok.from_pretrained(root / name / "pipeline").generator
        with torch.no_grad():
            loaded = logits(exported(*probe_inputs(captured["tok"])))
        save_file({**{f"w.{k}": v.contiguous() for k, v in captured["weights"].items()},
                   **{f"e.{k}": v.contiguous() for k, v in exported.state_dict().items()},
                   "live": captured["live"].contiguous(), "loaded": loaded.contiguous()},
                  str(root / name / "check.safetensors"))
if rank == 0:
    (root / "report.json").write_text(json.dumps(report))
'''


def split(checked: dict) -> tuple[dict, dict]:
    return ({k[2:]: v for k, v in checked.items() if k.startswith("w.")},
            {k[2:]: v for k, v in checked.items() if k.startswith("e.")})


def launch_fsdp_run(tmp_path, *, num_processes: int, mixed_precision: str = "no"):
    from safetensors.torch import load_file

    class Images(torch.utils.data.Dataset):
        def __init__(self, n=16):
            self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], i % 4

    for name, preset in (("tok", "tiny-var-vqvae"), ("hart_tok", "tiny-hart-tokenizer")):
        tok = build_tokenizer(preset).eval()
        torch.nn.init.normal_(tok.quantizer.codebook.embedding.weight)
        tok.save_pretrained(tmp_path / name)
        encode_dataset(tok, Images(), tmp_path / name.replace("tok", "tokens"), image_size=32, shard_size=16,
                       progress=False)
    script = tmp_path / "fsdp_run.py"
    script.write_text(FSDP_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as s:  # a free port, so parallel test runs do not collide on 29500
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
               "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", mixed_precision,
               "--dynamo_backend", "no", "--main_process_port", port, str(script), str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((tmp_path / "report.json").read_text())
    checks = {name: load_file(str(tmp_path / name / "check.safetensors"))
              for name in ("uninterrupted", "resumed", "hart")}
    return proc, report, checks


def check_fsdp_run(tmp_path, proc, report, checks, *, num_processes: int):
    assert "FSDP" in report["ema_error"] and "ema_decay" in report["ema_error"]
    for name in ("uninterrupted", "resumed", "hart"):  # really sharded: FSDP2 units holding a part of each tensor
        shape = report[name]
        assert shape["world"] == num_processes and shape["blocks_sharded"] and shape["param_type"] == "DTensor", shape
        assert shape["local_rows"] == -(-shape["full_rows"] // num_processes), shape
    checkpoint = tmp_path / "resumed" / "checkpoints" / "checkpoint_0"
    assert sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp")) == \
        [f"__{r}_0.distcp" for r in range(num_processes)]  # sharded: one file per process
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    assert "FSDP units: AdaLNBlock;" in proc.stdout and "FSDP units: HartBlock;" in proc.stdout
    for name, checked in checks.items():
        trained, exported = split(checked)
        assert trained.keys() == exported.keys(), name
        diff = [k for k in trained if not torch.equal(trained[k], exported[k])]
        assert diff == [], f"{name}: the export differs from the trained weights in {diff[:5]}"
    for name in ("uninterrupted", "resumed", "hart"):
        live, loaded = checks[name]["live"], checks[name]["loaded"]
        assert torch.allclose(live, loaded, atol=1e-6, rtol=0), \
            f"{name}: max {(live - loaded).abs().max():.3g}, mean {(live - loaded).abs().mean():.3g}"
    a, b = split(checks["uninterrupted"])[0], split(checks["resumed"])[0]
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], "the resumed run differs from the uninterrupted one"
    first = build_generator("tiny-var").state_dict()
    assert any(not torch.equal(first[k], a[k]) for k in first), "training changed nothing"
    assert (tmp_path / "uninterrupted" / "samples" / "step_0000004.png").exists()  # grids from the gathered copy


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_trains_resumes_and_exports_a_full_state_dict(tmp_path):
    proc, report, checks = launch_fsdp_run(tmp_path, num_processes=2)
    check_fsdp_run(tmp_path, proc, report, checks, num_processes=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fsdp2_on_the_gpus_trains_resumes_and_exports_a_full_state_dict(tmp_path):
    n = torch.cuda.device_count()
    proc, report, checks = launch_fsdp_run(tmp_path, num_processes=n, mixed_precision="no")
    check_fsdp_run(tmp_path, proc, report, checks, num_processes=n)
