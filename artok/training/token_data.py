"""What a generator trains on: token ids (and a hybrid tokenizer's residuals) from the shards that
``artok encode`` writes, or from images tokenized on the fly, as endless per-process batches; for a
text-conditioned generator with each image's caption, or the text encoder's context stored beside the ids."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from artok.config import ConfigError, GeneratorTrainConfig
from artok.data import build_dataset, collate
from artok.data.captions import CaptionStore
from artok.data.encode import weights_hash
from artok.data.loader import InfiniteShardedSampler
from artok.data.tokens import TokenDataset


class TokenTrainingSet(Dataset):
    """``dataset[(index, epoch)]`` → {"ids": per scale (pn*pn,), "label"} from an encoded dataset; with
    ``captions`` (a ``CaptionStore``) also the record's "context" (T, D) and "context_mask" (T,) when stored,
    else its "caption".

    With several views per image and ``views="random"``, index i is an image and its view is drawn from
    (seed, epoch, i), so every epoch sees each image once, in a different augmentation (LlamaGen).
    """

    def __init__(self, tokens: TokenDataset, *, seed: int = 0, views: str = "random",
                 captions: CaptionStore | None = None) -> None:
        self.tokens, self.seed, self.captions = tokens, seed, captions
        view = np.concatenate([np.asarray(s["view"]) for s in tokens.shards]) if tokens.shards else np.zeros(0)
        if views == "random" and tokens.manifest.get("views_per_input", 1) > 1:
            self.starts = np.flatnonzero(view == 0)  # records of one image are consecutive, view 0 first
        else:
            self.starts = np.arange(len(view))
        self.counts = np.diff(np.append(self.starts, len(view)))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        offset = 0
        if self.counts[index] > 1:
            g = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            offset = int(torch.randint(0, int(self.counts[index]), (), generator=g))
        record = self.tokens[int(self.starts[index] + offset)]
        item = {"ids": record.ids, "label": record.label}
        if record.residual is not None:
            item["residual"] = record.residual  # (C, h, w): a hybrid tokenizer's continuous residual
        if self.captions is not None and self.captions.has_contexts:
            item["context"], item["context_mask"] = self.captions.context(record.index)
        elif self.captions is not None:
            item["caption"] = self.captions.caption(record.index)
        return item


def collate_ids(samples: list[dict]) -> dict:
    batch = {"ids": [torch.stack([s["ids"][k] for s in samples]) for k in range(len(samples[0]["ids"]))],
             "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long)}
    if "residual" in samples[0]:
        batch["residual"] = torch.stack([s["residual"] for s in samples])
    if "context" in samples[0]:
        batch["context"] = torch.stack([s["context"] for s in samples])  # (B, T, D)
        batch["context_mask"] = torch.stack([s["context_mask"] for s in samples])  # (B, T)
    if "caption" in samples[0]:
        batch["captions"] = [s["caption"] for s in samples]
    return batch


def check_tokens_match(tokens: TokenDataset, tok, tokenizer_path: str) -> None:
    """The shards must come from the same tokenizer weights (ids of another codebook are meaningless)."""
    manifest = tokens.manifest
    if list(manifest["scales"]) != list(tok.scales) or manifest["codebook_size"] != tok.codebook_size:
        raise ConfigError(f"data.tokens {tokens.directory} was encoded with scales {manifest['scales']} and "
                          f"{manifest['codebook_size']} codes, the tokenizer {tokenizer_path} has {list(tok.scales)} "
                          f"and {tok.codebook_size}")
    if manifest["tokenizer_sha256"] != weights_hash(tok):
        raise ConfigError(f"data.tokens {tokens.directory} was encoded by different tokenizer weights than "
                          f"{tokenizer_path} (weights hash differs); encode again with this tokenizer")


def map_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unlabelled records (label −1) train the unconditional (null-class) embedding."""
    return torch.where(labels < 0, torch.full_like(labels, num_classes), labels)


def caption_store(cfg: GeneratorTrainConfig) -> CaptionStore | None:
    """The captions (and contexts) stored beside ``data.tokens`` for a text-conditioned generator, checked
    against the configured text encoder; None otherwise."""
    if not (cfg.text_conditioned and cfg.data.tokens):
        return None
    try:
        store = CaptionStore(cfg.data.tokens)
    except FileNotFoundError as e:
        raise ConfigError(f"data.tokens: {e}") from None
    if store.has_contexts:
        if cfg.text_encoder is not None and store.record.identity() != cfg.text_encoder.replace(
                context_dim=store.record.context_dim).identity():
            raise ConfigError(f"data.tokens {cfg.data.tokens} stores contexts of another text encoder "
                              f"({store.record.identity()}) than text_encoder ({cfg.text_encoder.identity()}); encode "
                              "again with this encoder, or leave text_encoder out to use the stored one")
        T, D = store.context_shape
        if D != cfg.generator.context_dim or T > cfg.generator.max_context_tokens:
            raise ConfigError(f"data.tokens stores contexts of {T} tokens x {D}, the generator takes up to "
                              f"{cfg.generator.max_context_tokens} x {cfg.generator.context_dim}")
    elif cfg.text_encoder is None:
        raise ConfigError(f"data.tokens {cfg.data.tokens} stores captions but no contexts: set text_encoder "
                          "(--text-encoder) to encode them during training")
    return store


def token_loader(cfg: GeneratorTrainConfig, tok, accelerator, *, start: int) -> tuple[DataLoader, int]:
    """This process's endless loader, after ``start`` samples, and the number of samples in the data set."""
    t = cfg.train
    if cfg.data.tokens:
        tokens = TokenDataset(cfg.data.tokens)
        check_tokens_match(tokens, tok, cfg.tokenizer)
        labels = tokens.labels
        if not cfg.text_conditioned and len(labels) and int(labels.max()) >= cfg.generator.num_classes:
            raise ConfigError(f"data.tokens holds labels up to {int(labels.max())}, but the generator has "
                              f"num_classes={cfg.generator.num_classes}")
        dataset = TokenTrainingSet(tokens, seed=t.seed, views=cfg.data.views, captions=caption_store(cfg))
        collate_fn = collate_ids
    else:
        dataset = build_dataset(cfg.data.images, image_size=tok.image_size, seed=t.seed,
                                captions=cfg.text_conditioned)
        collate_fn = collate
    sampler = InfiniteShardedSampler(len(dataset), num_replicas=accelerator.num_processes,
                                     rank=accelerator.process_index, seed=t.seed, start=start)
    loader = DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_fn, drop_last=True, generator=torch.Generator().manual_seed(t.seed))
    return loader, len(dataset)


def batch_ids(batch: dict, tok, device, *, hybrid: bool = False):
    """Token ids per scale, labels and (hybrid) the continuous residual of a batch; images are tokenized on the
    fly."""
    labels = batch["labels"].to(device)
    if "ids" in batch:
        ids = [i.to(device) for i in batch["ids"]]
        residual = batch.get("residual")
        if hybrid and residual is None:
            raise ConfigError("data.tokens holds no continuous residuals: encode with the hybrid tokenizer")
        return ids, labels, (residual.to(device) if residual is not None else None)
    images = batch["images"].to(device)
    if hybrid:
        with torch.no_grad():
            ids, residual = tok.tokenize_hybrid(images)
        return ids, labels, residual
    return tok.tokenize(images), labels, None
