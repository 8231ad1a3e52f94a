"""Stage-2 self-training: an EMA teacher relabels the pixels it is sure of.

Pseudo masks are coarse where the CAM was (a 16-px grid, blurred edges); a segmenter trained on
them already draws sharper edges than it was taught. From ``self_training.start`` on, the
teacher (an exponential moving average of the segmenter, :class:`timm.utils.ModelEmaV3`)
predicts each training batch as the student sees it, and a pixel whose teacher probability of
one of the image's own classes is at least ``confidence`` takes that class; glass keeps its
label, and the label gate holds (a class absent from the tile's label is never given).
"""

from __future__ import annotations

import torch
from torch import Tensor

from segmix.data.io import IGNORE_INDEX


@torch.no_grad()
def teacher_relabel(logits: Tensor, masks: Tensor, labels: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    """Masks with the teacher's confident, label-gated classes on tissue and ignored pixels.

    Args:
        logits: float (B, C, H, W) teacher logits over the mask indices (C >= K: the classes,
            then background when the dataset has one).
        masks: long (B, H, W) targets; values >= K other than ``IGNORE_INDEX`` (glass) are kept.
        labels: float (B, K) multi-hot classes of each (mixed) image.
        confidence: least probability of a relabelled pixel.

    Returns:
        ``(masks, changed)``: the new long (B, H, W) masks and a bool (B, H, W) of the pixels
        whose label changed.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 4.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
        >>> masks = torch.tensor([[[1, 255]]])
        >>> new, changed = teacher_relabel(logits, masks, torch.tensor([[1.0, 1.0]]), 0.9)
        >>> new.tolist(), changed.tolist()
        ([[[0, 1]]], [[[True, True]]])
        >>> teacher_relabel(logits, masks, torch.tensor([[0.0, 1.0]]), 0.9)[0].tolist()  # class 0 gated out
        [[[1, 1]]]
    """
    k = labels.shape[1]
    prob = logits.float().softmax(dim=1)
    prob[:, :k] = prob[:, :k] * (labels > 0.5)[:, :, None, None].to(prob.dtype)
    conf, cls = prob[:, :k].max(dim=1)
    tissue_or_unsure = (masks < k) | (masks == IGNORE_INDEX)
    relabel = (conf >= confidence) & tissue_or_unsure
    new = torch.where(relabel, cls, masks)
    return new, new != masks
