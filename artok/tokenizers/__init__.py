"""Tokenizers: encoder + quantizer + decoder."""
from artok.tokenizers.tokenizer import Tokenizer, TokenizerOutput

__all__ = ["Tokenizer", "TokenizerOutput"]
