"""The label-gated mask rule, for CAMs and a segmenter's maps alike: label gating, background, pixels
too close to call."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from segmix.data.io import IGNORE_INDEX
from segmix.data.spec import DatasetSpec
from segmix.models.gate import gated_max


def pseudo_masks(
    cams: Tensor,
    labels: Tensor,
    tissue: Tensor | None = None,
    background_index: int | None = None,
    margin: float | None = None,
) -> Tensor:
    """Pseudo masks from CAMs.

    Args:
        cams: float (B, K, H, W) normalised CAMs in [0, 1].
        labels: (B, K) multi-hot labels that gate the classes (image labels on the train split,
            predicted labels on unlabelled images). A class absent from the label never appears.
        tissue: bool (B, H, W); False pixels become ``background_index`` (glass policy).
            None: no background channel, every pixel gets a tissue class.
        background_index: mask index of background (needed with ``tissue``).
        margin: pixels whose best gated CAM leads the second gated one by less than this become
            255 (ignored by stage 2): where two labelled classes are about as strong, the mask is
            little better than a coin. A single-label image has no second class and keeps every pixel.

    Returns:
        uint8 (B, H, W).

    Examples:
        >>> import torch
        >>> cams = torch.tensor([[[[0.9, 0.2]], [[0.8, 0.7]], [[0.1, 0.95]]]])  # (1, 3, 1, 2)
        >>> pseudo_masks(cams, torch.tensor([[1, 1, 0]])).tolist()  # class 2 is not in the label
        [[[0, 1]]]
        >>> pseudo_masks(cams, torch.tensor([[1, 1, 0]]), margin=0.2).tolist()  # 0.9 - 0.8 < 0.2: ignored
        [[[255, 1]]]
        >>> pseudo_masks(cams, torch.tensor([[1, 0, 0]]), margin=0.2).tolist()  # one label: no rival
        [[[0, 0]]]
    """
    gate = labels.to(cams.device) > 0.5
    if not gate.any(dim=1).all():
        raise ValueError("every image needs at least one class in its label to be gated")
    best, index = gated_max(cams, gate)
    mask = index.to(torch.uint8)
    if margin is not None:  # the runner-up: the best gated CAM once the winner's is out (-inf: none)
        second = gated_max(cams.scatter(1, index[:, None], float("-inf")), gate)[0]
        mask[best - second < margin] = IGNORE_INDEX
    if tissue is not None:
        if background_index is None:
            raise ValueError("a tissue mask needs background_index")
        mask[~tissue.to(mask.device)] = background_index
    return mask


def gated_masks(
    maps: torch.Tensor,
    labels: torch.Tensor,
    group: list[dict],
    spec: DatasetSpec,
    margin: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The masks to write uint8 (B, H, W) (255 where ``margin`` leaves a pixel out) and the
    every-pixel masks uint8 (B, H, W) that are scored, from maps float (B, K, H, W)
    of same-size items of :class:`~segmix.pseudo.write.MaskInputs`: gated by ``labels`` (B, K), glass by
    ``spec``'s policy (:func:`pseudo_masks`)."""
    tissue = torch.from_numpy(np.stack([g["tissue"] for g in group])) if spec.glass_is_background else None
    every = pseudo_masks(maps, labels, tissue, spec.background_index)
    kept = every  # with nothing to leave out, the written masks are the scored ones
    if margin is not None:
        kept = pseudo_masks(maps, labels, tissue, spec.background_index, margin)
    return kept.cpu().numpy(), every.cpu().numpy()
