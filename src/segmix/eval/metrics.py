"""Confusion-matrix segmentation metrics under the WSSS histopathology protocol.

Protocol (as in the LUAD-HistoSeg / BCSS-WSSS / WSSS4LUAD peers): pixels whose *truth* is the
dataset's excluded index (background) or 255 (ignore) are left out. A prediction of the
excluded index on a tissue pixel stays in and counts as a miss of that tissue class.

NaN handling: a class absent from both truth and prediction of everything scored has
IoU = Dice = NaN and is left out of the means (``nanmean``); a class absent from truth but
predicted somewhere has IoU = 0. FwIoU weighs IoU by truth pixel share, so absent classes carry
weight 0. Pixel accuracy is correct / scored pixels. A *predicted* 255 (a pseudo mask's
uncertain pixel) assigns no class: it is a miss of the true class and a false positive of none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segmix.data.io import IGNORE_INDEX, IMAGE_SUFFIXES, read_mask
from segmix.data.spec import DatasetSpec
from segmix.errors import DatasetError


@dataclass(frozen=True)
class SegScores:
    """Scores over the scored classes (every mask index except the excluded one).

    All values are fractions in [0, 1]; per-class arrays are float64 of shape (C,), NaN where
    the class is absent from truth and prediction alike.
    """

    classes: list[str]
    iou: np.ndarray
    dice: np.ndarray
    miou: float
    fwiou: float
    mdice: float
    pixel_accuracy: float
    pixels: int

    def as_dict(self) -> dict:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        return {
            "miou": num(self.miou),
            "fwiou": num(self.fwiou),
            "dice": num(self.mdice),
            "pixel_accuracy": num(self.pixel_accuracy),
            "pixels": self.pixels,
            "per_class": {c: num(v) for c, v in zip(self.classes, self.iou)},
            "per_class_dice": {c: num(v) for c, v in zip(self.classes, self.dice)},
        }


class ConfusionMatrix:
    """Streaming confusion matrix over mask indices ``0..num_indices-1``.

    Args:
        num_indices: number of mask indices (tissue classes plus background).
        class_names: names of all ``num_indices`` indices, in order; defaults to their numbers.
        exclude_index: truth index left out of scoring (the dataset's background), or None.
        ignore_index: truth index always left out (255).
    """

    def __init__(
        self,
        num_indices: int,
        class_names: list[str] | None = None,
        exclude_index: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.num_indices = num_indices
        self.class_names = class_names or [str(i) for i in range(num_indices)]
        if len(self.class_names) != num_indices:
            raise ValueError(f"{len(self.class_names)} class names for {num_indices} indices")
        self.exclude_index = exclude_index
        self.ignore_index = ignore_index
        # [truth, pred]; the extra last column counts predictions of ignore_index (unassigned)
        self.matrix = np.zeros((num_indices, num_indices + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one (or a batch of) prediction(s); integer arrays of equal shape."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != truth shape {target.shape}")
        keep = target != self.ignore_index
        if self.exclude_index is not None:
            keep &= target != self.exclude_index
        t = target[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        p[p == self.ignore_index] = self.num_indices
        if t.size and (t.max() >= self.num_indices or t.min() < 0):
            raise ValueError(f"truth index out of range 0..{self.num_indices - 1}")
        if p.size and (p.max() > self.num_indices or p.min() < 0):
            raise ValueError(f"predicted index out of range 0..{self.num_indices - 1} (or {self.ignore_index})")
        cols = self.num_indices + 1
        self.matrix += np.bincount(t * cols + p, minlength=self.num_indices * cols).reshape(self.num_indices, cols)

    def sum_across(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace the counts by their sum over processes (DDP): ``all_reduce_sum`` takes this
        process's counts as an int64 tensor and returns the sum over all processes."""
        self.matrix = all_reduce_sum(torch.as_tensor(self.matrix)).cpu().numpy()

    @property
    def scored(self) -> list[int]:
        return [i for i in range(self.num_indices) if i != self.exclude_index]

    def compute(self) -> SegScores:
        m = self.matrix.astype(np.float64)
        idx = self.scored
        tp = np.diag(m)[idx]
        truth = m.sum(axis=1)[idx]  # TP + FN: predicted as anything, background and unassigned too
        pred = m[:, idx].sum(axis=0)  # TP + FP
        iou = class_iou(tp, truth, pred)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(truth + pred > 0, 2 * tp / (truth + pred), np.nan)
        total = truth.sum()
        freq = truth / total if total > 0 else np.zeros_like(truth)
        names = [self.class_names[i] for i in idx]
        return SegScores(
            classes=names,
            iou=iou,
            dice=dice,
            miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            fwiou=float(np.nansum(freq * iou)) if total > 0 else float("nan"),
            mdice=float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            pixels=int(total),
        )


def class_iou(tp: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU per class from its true positives, truth pixels and predicted pixels (NaN where a class
    is in neither): the one IoU of segmix (scores, stage 1's val mIoU)."""
    union = truth + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def confusion_miou(confusion) -> float:
    """Mean IoU of a square (K, K) truth x prediction confusion (array or tensor), over the
    classes it has seen (NaN when none).

    Examples:
        >>> import numpy as np
        >>> round(confusion_miou(np.array([[3, 1], [0, 4]])), 4)  # IoUs 3/4 and 4/5
        0.775
    """
    m = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=np.float64)
    iou = class_iou(np.diag(m), m.sum(axis=1), m.sum(axis=0))
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def score_masks(pairs, num_indices: int, class_names: list[str], exclude_index: int | None) -> SegScores:
    """Score an iterable of ``(pred, truth)`` (H, W) integer arrays, streaming."""
    cm = ConfusionMatrix(num_indices, class_names, exclude_index)
    for pred, truth in pairs:
        cm.update(pred, truth)
    return cm.compute()


def score_mask_folders(pred_dir: str | Path, truth_dir: str | Path, spec: DatasetSpec) -> tuple[SegScores, int]:
    """Score every mask image of ``pred_dir`` against the same-named file of ``truth_dir``.

    Returns:
        (scores, number of masks scored).

    Raises:
        DatasetError: a missing or empty folder, a prediction without truth, a bad mask file,
            truth without a pixel to score.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            raise DatasetError(folder, "folder does not exist")
    preds = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not preds:
        raise DatasetError(pred_dir, "no mask images in folder")

    def pairs():
        for p in preds:
            truth_path = truth_dir / p.name
            if not truth_path.is_file():
                raise DatasetError(p, f"no truth mask {truth_path}")
            truth = read_mask(truth_path, spec.num_indices, spec.palette)
            yield read_mask(p, spec.num_indices, spec.palette, truth.shape), truth

    scores = score_masks(pairs(), spec.num_indices, spec.index_names, spec.exclude_index)
    if scores.pixels == 0:
        left_out = f"{spec.index_names[spec.exclude_index]} (excluded) or " if spec.exclude_index is not None else ""
        raise DatasetError(truth_dir, f"no pixel to score: every truth pixel is {left_out}unlabelled ({IGNORE_INDEX})")
    return scores, len(preds)
