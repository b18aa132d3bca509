"""Text-encoder context for text-to-image HART (optional: ``pip install "artok[text]"``).

HART conditions on the last hidden states of a Qwen2 language model (``mit-han-lab/Qwen2-VL-1.5B-Instruct``,
1536-d) over the prompt tokens, right padded to ``max_length`` (300), with position ids cumsum(mask) − 1,
as ``hart/utils/tools.py::encode_prompts`` builds them. When HART's sample.py prepends its LLM system
prompt, pass it as ``system_prompt``: it is run through the model but only the prompt tokens' states are kept.

The encoder needs the ``transformers`` package and the weights; both failures raise ``TextEncoderUnavailable``
with what to do. Without them, any (B, T, D) tensor of states with a mask works as the context.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_TEXT_ENCODER = "mit-han-lab/Qwen2-VL-1.5B-Instruct"
DEFAULT_MAX_LENGTH = 300


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


class TextEncoder:
    """Prompts → HART context with a Hugging Face causal language model's last hidden state.

    Args:
        name_or_path: a Hub repository id or a local folder with the model and its tokenizer.
        max_length: T; prompts are padded or truncated to it (HART's ``max_token_length``).
        device, dtype: where and in which precision the language model runs (states come back as float32).
        system_prompt: text run before every prompt whose states are dropped (HART's ``use_llm_system_prompt``).
    """

    def __init__(self, name_or_path: str = DEFAULT_TEXT_ENCODER, *, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 system_prompt: str | None = None) -> None:
        try:
            import transformers
        except ImportError:
            raise TextEncoderUnavailable(
                "the text encoder needs the optional package 'transformers': pip install \"artok[text]\" (or pass "
                "your own (B, T, D) context tensor with a mask)") from None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
            self.model = transformers.AutoModel.from_pretrained(name_or_path, torch_dtype=dtype)
        except Exception as e:  # offline, missing files, gated repository, unknown architecture
            raise TextEncoderUnavailable(
                f"cannot load the text encoder '{name_or_path}' ({type(e).__name__}: {e}). Without internet access, "
                f"download it elsewhere (`huggingface-cli download {name_or_path} --local-dir DIR`) and pass DIR"
            ) from None
        self.model.eval().to(device or "cpu")
        self.max_length, self.system_prompt = max_length, system_prompt

    def _tokenize(self, text: str, padding: str) -> torch.Tensor:
        return self.tokenizer(text, return_tensors="pt", padding=padding, max_length=self.max_length,
                              truncation=True).input_ids[0]

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> TextContext:
        if isinstance(prompts, str):
            prompts = [prompts]
        device = self.model.device
        tokens = torch.stack([self._tokenize(p, "max_length") for p in prompts]).to(device)  # (B, T)
        mask = tokens != self.tokenizer.pad_token_id
        positions = mask.long().cumsum(1) - 1
        if self.system_prompt is None:
            states = self.model(tokens, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        else:
            system = self._tokenize(self.system_prompt, "longest").to(device)[None].repeat(len(prompts), 1)
            full_mask = torch.cat([torch.ones_like(system, dtype=torch.bool), mask], dim=1)
            states = self.model(torch.cat([system, tokens], dim=1), attention_mask=full_mask,
                                output_hidden_states=True).hidden_states[-1][:, system.shape[1]:]
        return TextContext(context=states.float(), mask=mask, position_ids=positions)
