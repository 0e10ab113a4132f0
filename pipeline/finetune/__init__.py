"""Stage 3: rebuild the end-to-end model from a run's dense head, check the hand-off, train."""

from .train import FinetuneResult, finetune

__all__ = ["FinetuneResult", "finetune"]
