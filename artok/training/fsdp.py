"""FSDP through Accelerate: which modules are sharding units, FSDP2 on CPU processes, and the full weights that
sample grids, scores and exports use while the trained model is sharded.

Launched from an FSDP config (``configs/accelerate/fsdp.yaml``), ``accelerate launch`` sets
``ACCELERATE_USE_FSDP`` and the ``FSDP_*`` variables that Accelerate's ``FullyShardedDataParallelPlugin`` reads.
Three things are artok's part:

- the auto-wrap units: each VAR ``AdaLNBlock`` and HART ``HartBlock``, and a tokenizer's encoder and decoder,
  when the config names no ``fsdp_transformer_layer_cls_to_wrap`` (one config then serves VAR, HART and
  tokenizers; Accelerate refuses a named class that the model lacks);
- CPU processes: Accelerate 1.x only switches to FSDP for accelerator process groups (``AcceleratorState``
  sets ``DistributedType.FSDP`` from the ``MULTI_GPU``/``MULTI_XPU``/... types, never from ``MULTI_CPU``), so an
  FSDP launch without a GPU silently trains plain DDP. torch's FSDP2 (``fully_shard``) runs on CPU with gloo,
  so ``configure`` marks the state FSDP; FSDP1 cannot (torch raises "FSDP needs a non-CPU accelerator
  device"), which ``check_launch`` says before Accelerate fails less clearly;
- ``FullWeights``: every process takes part in gathering the full state dict
  (``accelerator.get_state_dict``), and the main process loads it into an unsharded copy of the model, which
  grids, ``evaluate`` and ``export`` use (a sharded module holds only this process's shard, and its forward
  is a collective that one process cannot run alone).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from artok.checkpoint import load_strict
from artok.config import ConfigError
from artok.models.blocks import AdaLNBlock, HartBlock
from artok.tokenizers import Tokenizer

TRANSFORMER_BLOCKS = (AdaLNBlock, HartBlock)


def requested() -> bool:
    """Whether this process was launched for FSDP (an FSDP Accelerate config, or ``--use_fsdp``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_launch(*, has_device: bool) -> None:
    """Before the Accelerator is made: FSDP on CPU processes must be FSDP2."""
    version = os.environ.get("FSDP_VERSION", "1")
    if requested() and not has_device and version != "2":
        raise ConfigError(f"FSDP on CPU processes needs fsdp_version: 2 (this launch asks for {version}): torch's "
                          "FSDP1 needs an accelerator device; FSDP2 runs on CPU with gloo")


def configure(accelerator) -> bool:
    """After the Accelerator is made, for an FSDP launch: a fresh plugin from the launch's ``FSDP_*`` variables
    (Accelerate keeps the first run's plugin in its process-wide state, its wrap policy already bound to that
    run's model classes), and on CPU processes the FSDP type that Accelerate withheld. Returns whether the
    run is FSDP."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not requested() or accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.MULTI_CPU):
        return False
    plugin = FullyShardedDataParallelPlugin()
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        if plugin.fsdp_version != 2:
            raise ConfigError("FSDP on CPU processes needs fsdp_version: 2")
        # AcceleratorState copies PartialState's type on every construction: both must say FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    return True


def wrap_units(module: nn.Module) -> list[str]:
    """Class names of the modules that become FSDP units inside ``module``: transformer blocks, and a tokenizer's
    encoder and decoder (its quantizer and convolutions around them stay in the root unit)."""
    names: dict[str, None] = {}
    for m in module.modules():
        if isinstance(m, TRANSFORMER_BLOCKS):
            names[type(m).__name__] = None
        elif isinstance(m, Tokenizer):
            names[type(m.encoder).__name__] = None
            names[type(m.decoder).__name__] = None
    return list(names)


def set_wrap_units(accelerator, module: nn.Module) -> list[str]:
    """Before ``accelerator.prepare(module, ...)``: give a transformer-based auto-wrap policy this module's units
    (``wrap_units``) unless the config names them; returns the names. Call it for every model prepared (a GAN's
    discriminator too): Accelerate resolves the names in each model and refuses one that a model lacks. A no-op
    outside FSDP."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    if accelerator.distributed_type.name != "FSDP":
        return []
    plugin = accelerator.state.fsdp_plugin
    policy = plugin.auto_wrap_policy
    if getattr(policy, "func", policy) is not transformer_auto_wrap_policy:
        return []  # size-based or none: as configured
    if not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        # FSDP1's plugin binds its policy to the classes of the first model prepared: unbind it
        plugin.auto_wrap_policy = transformer_auto_wrap_policy
        plugin.transformer_cls_names_to_wrap = wrap_units(module)
    return list(plugin.transformer_cls_names_to_wrap)


def module_prefix(outer: nn.Module, inner: nn.Module) -> str:
    """The state-dict prefix of ``inner`` inside ``outer`` ('' when they are the same module)."""
    for name, m in outer.named_modules():
        if m is inner:
            return f"{name}." if name else ""
    raise ValueError(f"{type(inner).__name__} is not a submodule of {type(outer).__name__}")


class FullWeights:
    """The main process's unsharded copy of a sharded model, refreshed from the gathered full state dict.

    Made before ``prepare`` (FSDP2 swaps the class of the modules it shards): ``prepared`` is what Accelerate
    prepared (``net`` or a module holding it), ``net`` the module exported, built again from ``net.config``.
    ``gather`` is a collective: every process calls it at the same step."""

    def __init__(self, accelerator, net: nn.Module) -> None:
        self.accelerator = accelerator
        self.net_class, self.config = type(net), net.config
        self.net = net
        self.prepared: nn.Module | None = None
        self.module: nn.Module | None = None  # the copy, on the main process
        self.step = -1

    def gather(self, step: int) -> nn.Module | None:
        if self.prepared is None:
            raise RuntimeError("FullWeights.prepared is not set: give it the prepared model")
        if step == self.step:
            return self.module
        state = self.accelerator.get_state_dict(self.prepared)  # full on the main process, empty elsewhere
        if self.accelerator.is_main_process:
            prefix = module_prefix(self.prepared, self.net)
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if self.module is None:
                with torch.random.fork_rng(devices=[]):  # building it must not move this process's random stream
                    self.module = self.net_class(self.config).requires_grad_(False)
            load_strict(self.module, weights, source="the gathered FSDP state dict")
            self.module.to(self.accelerator.device)
        self.step = step
        return self.module
