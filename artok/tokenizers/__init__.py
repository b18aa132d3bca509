"""Tokenizers: encoder + quantizer + decoder."""
from artok.tokenizers.tokenizer import Tokenizer, TokenizerOutput

__all__ = ["Tokenizer", "TokenizerOutput"]
from artok.tokenizers.hybrid import HybridTokenizer  # noqa: E402

__all__ += ["HybridTokenizer"]
