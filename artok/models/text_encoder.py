"""Text-encoder context for text-to-image HART (optional: ``pip install "artok[text]"``).

HART conditions on the last hidden states of a Qwen2 language model (``mit-han-lab/Qwen2-VL-1.5B-Instruct``,
1536-d) over the prompt tokens, right padded to ``max_length`` (300), with position ids cumsum(mask) − 1,
as ``hart/utils/tools.py::encode_prompts`` builds them. With a ``system_prompt`` (HART's sample.py prepends
its LLM system prompt) that text is run through the model but only the prompt tokens' states are kept.

``TextEncoder(config)`` takes a ``TextEncoderConfig`` (the record a text-conditioned pipeline keeps in
``text_encoder.json``) or a name. It needs the ``transformers`` package and the weights, from a local folder,
the Hugging Face cache or the Hub; every failure raises ``TextEncoderUnavailable`` at once (no download
retries when the Hub cannot be reached) with where to put the weights. Without an encoder, any (B, T, D)
tensor of states with a mask works as the context.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from artok.config import TextEncoderConfig
from artok.config.text import HART_MAX_LENGTH, HART_TEXT_ENCODER

DEFAULT_TEXT_ENCODER = HART_TEXT_ENCODER
DEFAULT_MAX_LENGTH = HART_MAX_LENGTH
HUB_TIMEOUT_S = 3.0


class TextEncoderUnavailable(RuntimeError):
    """The text encoder's package or weights cannot be had."""


@dataclass
class TextContext:
    """context (B, T, D) float32; mask (B, T) bool, True for prompt tokens; position_ids (B, T)."""

    context: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor

    def as_kwargs(self) -> dict:
        """Keyword arguments of ``generate_hart`` / ``HartTransformer.forward`` besides the context."""
        return {"context_mask": self.mask, "context_position_ids": self.position_ids}

    def __len__(self) -> int:
        return self.context.shape[0]


def _where_to_put(name: str) -> str:
    return (f"download it on a machine with internet (`huggingface-cli download {name} --local-dir DIR`), copy DIR "
            f"here and pass it as the text encoder (artok sample --text-encoder DIR, or text_encoder.name_or_path: "
            f"DIR), or put it in the Hugging Face cache (HF_HOME, now {_hf_home()})")


def _hf_home() -> str:
    return os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))


def _hub_reachable() -> bool:
    """One TCP connection to the Hub endpoint (``HF_ENDPOINT``), so that an offline machine fails at once
    instead of after transformers' download retries; False in offline mode (``HF_HUB_OFFLINE``)."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def resolve_location(name_or_path: str, base_dir: str | Path | None = None) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, whether it is a local folder). A relative folder is looked up in
    ``base_dir`` (the pipeline directory) first; a name that is not a folder must be a Hub id ``org/name``."""
    path = Path(name_or_path).expanduser()
    if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).is_dir():
        return str(Path(base_dir) / path), True
    if path.is_dir():
        return str(path), True
    looks_like_path = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise TextEncoderUnavailable(f"cannot load the text encoder '{name_or_path}': the folder {path} does not "
                                     f"exist; {_where_to_put('ORG/NAME')}")
    return name_or_path, False


class TextEncoder:
    """Prompts → HART context with a Hugging Face language model's hidden states.

    Args:
        config: a ``TextEncoderConfig`` (name or folder, max length, hidden layer, system and null prompts), or a
            Hub id / local folder (then ``max_length`` and ``system_prompt`` apply).
        base_dir: where a relative folder in the config is looked up first (the pipeline directory).
        device, dtype: where and in which precision the language model runs (states come back as float32).
    """

    def __init__(self, config: TextEncoderConfig | str = DEFAULT_TEXT_ENCODER, *, max_length: int | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 system_prompt: str | None = None, base_dir: str | Path | None = None) -> None:
        if isinstance(config, str):
            config = TextEncoderConfig(name_or_path=config, max_length=max_length or DEFAULT_MAX_LENGTH,
                                       system_prompt=system_prompt)
        self.config = config
        try:
            import transformers
        except ImportError:
            raise TextEncoderUnavailable(
                "the text encoder needs the optional package 'transformers': pip install \"artok[text]\" (or pass "
                "your own (B, T, D) context tensor with a mask)") from None
        name = config.name_or_path
        location, local = resolve_location(name, base_dir)

        def load(**kw):
            tokenizer = transformers.AutoTokenizer.from_pretrained(location, **kw)
            model = transformers.AutoModel.from_pretrained(location, **kw)
            return tokenizer, (model if dtype is None else model.to(dtype))

        try:
            if local:
                self.tokenizer, self.model = load()
            else:
                try:
                    self.tokenizer, self.model = load(local_files_only=True)  # the Hugging Face cache
                except OSError:
                    if not _hub_reachable():
                        raise TextEncoderUnavailable(
                            f"the text encoder '{name}' is not in the Hugging Face cache and the Hub cannot be "
                            f"reached; {_where_to_put(name)}") from None
                    self.tokenizer, self.model = load()
        except TextEncoderUnavailable:
            raise
        except Exception as e:  # missing files, gated repository, unknown architecture
            raise TextEncoderUnavailable(f"cannot load the text encoder '{name}' from {location} "
                                         f"({type(e).__name__}: {e}); {_where_to_put(name)}") from None
        if self.tokenizer.pad_token_id is None:
            raise TextEncoderUnavailable(f"the text encoder '{name}' has a tokenizer without a padding token; "
                                         "prompts are right padded to max_length, so it needs one")
        self.model.eval().requires_grad_(False).to(device or "cpu")
        hidden = getattr(self.model.config, "hidden_size", None)
        if config.context_dim and hidden is not None and hidden != config.context_dim:
            raise TextEncoderUnavailable(f"the text encoder '{name}' has hidden size {hidden}, but the record says "
                                         f"context_dim={config.context_dim}")
        self.context_dim = hidden or config.context_dim
        self.max_length, self.system_prompt = config.max_length, config.system_prompt

    @property
    def device(self) -> torch.device:
        return self.model.device

    def record(self) -> TextEncoderConfig:
        """The config with the context size filled in (what a pipeline saves)."""
        return self.config.replace(context_dim=self.context_dim)

    def _tokenize(self, text: str, padding: str) -> torch.Tensor:
        return self.tokenizer(text, return_tensors="pt", padding=padding, max_length=self.max_length,
                              truncation=True).input_ids[0]

    @torch.no_grad()
    def __call__(self, prompts: list[str] | str) -> TextContext:
        """prompts (B strings) → context (B, max_length, D) float32, mask, position ids."""
        if isinstance(prompts, str):
            prompts = [prompts]
        device, layer = self.model.device, self.config.hidden_layer
        tokens = torch.stack([self._tokenize(p, "max_length") for p in prompts]).to(device)  # (B, T)
        mask = tokens != self.tokenizer.pad_token_id
        positions = mask.long().cumsum(1) - 1
        if self.system_prompt is None:
            states = self.model(tokens, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        else:
            system = self._tokenize(self.system_prompt, "longest").to(device)[None].repeat(len(prompts), 1)
            full_mask = torch.cat([torch.ones_like(system, dtype=torch.bool), mask], dim=1)
            states = self.model(torch.cat([system, tokens], dim=1), attention_mask=full_mask,
                                output_hidden_states=True).hidden_states[layer][:, system.shape[1]:]
        return TextContext(context=states.float(), mask=mask, position_ids=positions)

    def null_context(self, batch: int) -> TextContext | None:
        """The encoded null prompt repeated ``batch`` times, or None for HART's zero context."""
        if self.config.null_prompt is None:
            return None
        return self([self.config.null_prompt] * batch)
