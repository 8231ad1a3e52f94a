"""Evaluation protocol: confusion-matrix metrics (IoU, mIoU, FwIoU, Dice, pixel accuracy).

``segmix.eval.evaluate`` scores a stage-2 segmenter; it is imported on use, since it needs the
trained model code while the metrics here serve every stage.
"""

from segmix.eval.metrics import ConfusionMatrix, SegScores, score_masks

__all__ = ["ConfusionMatrix", "SegScores", "score_masks"]
