"""The text-encoder record of a text-conditioned generator: which language model turned prompts into the
context it was trained on, and how (``artok/models/text_encoder.py`` builds the encoder from it)."""
from __future__ import annotations

from dataclasses import dataclass

from artok.config.base import Config, ConfigError

# HART's Qwen2 encoder (hart/utils sample.py: --text_model_path, --max_token_length 300)
HART_TEXT_ENCODER = "mit-han-lab/Qwen2-VL-1.5B-Instruct"
HART_MAX_LENGTH = 300
# HART's llm_system_prompt (hart/utils/constants.py at 453235f), run before every prompt with its states
# dropped (use_llm_system_prompt, on by default in sample.py). It ends with a literal backslash-n, as there.
HART_SYSTEM_PROMPT = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
    'image generation.\n\nExamples:\n- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a '
    'round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.\n'
    '- User Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a '
    'diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass '
    'skyscrapers.\n\nPlease generate only the enhanced description for the prompt below and DO NOT include any '
    'additional sentences. Start your response with "Enhanced Prompt:".\n\nUser Prompt:\\n'
)


@dataclass
class TextEncoderConfig(Config):
    """Prompts → context: a Hugging Face language model and how its states are read.

    ``name_or_path``: a Hub repository id or a local folder with the model and its tokenizer (a relative
    folder is looked up beside the pipeline first). Prompts are right padded or truncated to ``max_length``
    tokens; the context is ``hidden_states[hidden_layer]`` (−1: the last, as HART). ``system_prompt`` is run
    before every prompt and its states dropped (HART's ``use_llm_system_prompt``). ``null_prompt`` is the
    unconditional branch of guidance and what caption dropout trains: null is HART's all-zero context
    (position ids 0, only the first slot valid at sampling); a string (``""`` for the empty prompt, or a
    negative prompt) is encoded like any prompt. ``context_dim`` is the model's hidden size (0: not recorded).
    """

    name_or_path: str = HART_TEXT_ENCODER
    max_length: int = HART_MAX_LENGTH
    hidden_layer: int = -1
    system_prompt: str | None = None
    null_prompt: str | None = None
    context_dim: int = 0

    def validate(self) -> None:
        if not self.name_or_path:
            raise ConfigError("text_encoder.name_or_path is required (a Hub id or a local folder)")
        if self.max_length < 1:
            raise ConfigError(f"text_encoder.max_length must be >= 1, got {self.max_length}")
        if self.context_dim < 0:
            raise ConfigError(f"text_encoder.context_dim must be >= 0, got {self.context_dim}")

    def identity(self) -> dict:
        """What decides the contexts of a caption (the null prompt only decides dropout and guidance)."""
        return {k: v for k, v in self.to_dict().items() if k != "null_prompt"}


def hart_text_encoder(**overrides) -> TextEncoderConfig:
    """The record of the released HART model's encoder: Qwen2-VL-1.5B-Instruct's last hidden states over 300
    tokens after HART's system prompt, null branch the zero context."""
    return TextEncoderConfig(name_or_path=HART_TEXT_ENCODER, max_length=HART_MAX_LENGTH, hidden_layer=-1,
                             system_prompt=HART_SYSTEM_PROMPT, null_prompt=None, context_dim=1536).replace(**overrides)
