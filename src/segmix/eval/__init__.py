"""Evaluation protocol: confusion-matrix metrics (IoU, mIoU, FwIoU, Dice, pixel accuracy), and
``evaluate``, which scores a stage-2 model file on a split."""

from segmix.eval.evaluate import evaluate, scores_markdown
from segmix.eval.metrics import ConfusionMatrix, SegScores, score_mask_folders, score_masks

__all__ = ["ConfusionMatrix", "SegScores", "evaluate", "score_mask_folders", "score_masks", "scores_markdown"]
