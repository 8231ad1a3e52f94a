"""Evaluation protocol: confusion-matrix metrics (IoU, mIoU, FwIoU, Dice, pixel accuracy), and
``evaluate``, which scores a stage-2 model file on a split."""

from segmix.eval.evaluate import evaluate
from segmix.eval.metrics import score_mask_folders

__all__ = ["evaluate", "score_mask_folders"]
