"""A tiny random Qwen2 text encoder with a byte-level BPE tokenizer trained here on a small word list, saved
to a local folder (nothing is downloaded)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

WORDS = ("a red orange yellow green cyan blue purple pink white black gray brown circle square triangle ring cross "
         "horizontal vertical diagonal stripes checkerboard diamond fox in snow the of").split()


def build_tiny_text_encoder(folder: Path, *, hidden_size: int = 16, layers: int = 2, seed: int = 0) -> Path:
    """Save a ``layers``-layer Qwen2 of width ``hidden_size`` with random weights and a Qwen2 tokenizer whose
    byte-level BPE knows ``WORDS`` as single tokens to ``folder``; returns it."""
    transformers = pytest.importorskip("transformers")
    import torch
    from tokenizers import ByteLevelBPETokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3 + [p + w for w in WORDS for p in ("", " ")], vocab_size=400,
                            min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(folder))
    try:  # transformers 5: vocab and merges as objects
        vocab = json.loads((folder / "vocab.json").read_text())
        merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()
                  if line and not line.startswith("#")]
        tokenizer = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges)
    except TypeError:  # transformers 4: file names
        tokenizer = transformers.Qwen2TokenizerFast(vocab_file=str(folder / "vocab.json"),
                                                    merges_file=str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    config = transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size,
                                      intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(seed)
    transformers.Qwen2Model(config).save_pretrained(folder)
    return folder
