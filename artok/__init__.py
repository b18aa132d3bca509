"""artok: autoregressive image generation over learned image tokens."""
from artok.config import ConfigError, QuantizerConfig, TokenizerConfig
from artok.hub import CheckpointError, Pipeline, from_pretrained
from artok.registry import build_tokenizer, tokenizer_config
from artok.registry import build_generator, generator_config
from artok.config import GeneratorConfig

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "Pipeline", "QuantizerConfig", "TokenizerConfig", "build_tokenizer",
           "from_pretrained", "tokenizer_config"]
__all__ += ["GeneratorConfig", "build_generator", "generator_config"]
