"""Shared by the language-model families (char_lm, kolosis): the learning-rate schedule and the
unigram baseline every validation loss is compared with."""
import math

import torch
from torch import Tensor

__all__ = ["lr_factor", "unigram_cross_entropy"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float = 0.1) -> float:
    """Multiplier of the base rate at optimiser ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps``, then a cosine down to ``floor`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def unigram_cross_entropy(train_ids: Tensor, val_ids: Tensor, vocab_size: int, smoothing: float = 1.0) -> float:
    """Loss (nats per token) on ``val_ids`` of the add-``smoothing`` unigram distribution of ``train_ids``."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + smoothing
    log_probs = (counts / counts.sum()).log()
    return float(-log_probs[val_ids].mean())
