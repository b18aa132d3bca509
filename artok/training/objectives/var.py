"""VAR training (next-scale prediction, or raster order over a single-scale VQ): teacher-forced
cross-entropy of the first ``num_active`` tokens, which a block-causal model predicts without looking at
later tokens, so that progressive training over scales is a prefix of the sequence."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from artok.pipeline import build_generator
from artok.training.objectives.generator import GeneratorObjective


class VarObjective(GeneratorObjective):
    """A class-conditional ``Generator`` on a discrete tokenizer's ids."""

    def build_model(self) -> nn.Module:
        return build_generator(self.cfg.generator)

    def token_loss(self, model, ids, labels, residual):
        gen, tok = self.model, self.tok
        num_active = (sum(gen.block_sizes[:self.num_scales]) if gen.config.block_unit == "scale"
                      else gen.num_tokens)
        with torch.no_grad():
            inputs = tok.teacher_inputs(ids)  # (B, L - first, C)
            targets = torch.cat(ids, dim=1)  # (B, L)
        logits = model(inputs, labels)[:, :num_active]  # (B, l, V)
        target = targets[:, :num_active]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               label_smoothing=self.cfg.recipe.label_smoothing)
        with torch.no_grad():
            correct = (logits.argmax(-1) == target).float()
            logs = {"loss": loss.detach(), "accuracy": correct.mean()}
            last = tok.scales[-1] ** 2 if num_active == targets.shape[1] and len(tok.scales) > 1 else 0
            if last:
                logs["accuracy_last_scale"] = correct[:, -last:].mean()
        return loss, logs
