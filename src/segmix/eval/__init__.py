"""Evaluation protocol: confusion-matrix metrics (IoU, mIoU, FwIoU, Dice, pixel accuracy)."""

from segmix.eval.metrics import ConfusionMatrix, SegScores, score_masks

__all__ = ["ConfusionMatrix", "SegScores", "score_masks"]
