"""Stage-2 mosaics: a SegMix shuffle of images and their masks together, with exact cells.

A shuffled batch is a mosaic whose every cell has a known source tile (``MixInfo.source``). The
masks move with their pixels, so a pseudo mask stays on the tissue it was drawn for, and a cell
cut from a tile with a single label is exact: its class covers it (glass and ignored pixels
aside). Such cells put true class boundaries where two sources meet, which the tiles alone
rarely show with exact labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segmix.data.io import IGNORE_INDEX
from segmix.shuffle.segmix import SegMix, shuffle_patches


def exact_single_label(masks: Tensor, labels: Tensor, background_index: int | None) -> Tensor:
    """Masks whose tiles carry one label: that class on every pixel but background and ignored.

    Args:
        masks: long (B, H, W) pseudo masks.
        labels: float (B, K) multi-hot image labels.
        background_index: the glass index the pseudo masks wrote (kept), or None.

    Returns:
        long (B, H, W); tiles with several labels unchanged.

    Examples:
        >>> import torch
        >>> masks = torch.tensor([[[0, 1], [255, 2]], [[0, 1], [1, 1]]])
        >>> exact_single_label(masks, torch.tensor([[0.0, 1.0], [1.0, 1.0]]), background_index=2).tolist()
        [[[1, 1], [1, 2]], [[0, 1], [1, 1]]]
    """
    single = (labels > 0.5).sum(dim=1) == 1
    keep = masks == background_index if background_index is not None else torch.zeros_like(masks, dtype=torch.bool)
    exact = labels.argmax(dim=1)[:, None, None].expand_as(masks)
    return torch.where(single[:, None, None] & ~keep, exact, masks)


def mosaic_batch(
    mixer: SegMix,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    exact_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One shuffle of images and masks; loss weights per pixel.

    Args:
        mixer: the shuffle (patch size, ratio, probability).
        images: (B, C, H, W), any dtype.
        masks: long (B, H, W).
        labels: float (B, K) multi-hot image labels of the unmixed tiles.
        exact_weight: weight of a pixel whose source tile has a single label; others weigh 1.
        generator: the random stream of the draw.

    Returns:
        ``(images, masks, weights, labels)``: mixed images and masks as given, float (B, H, W)
        weights (0 where the mask is ``IGNORE_INDEX``), float (B, K) labels of the mixed images
        (every class of a source, ``mixer.label_mix`` "union" by default).

    Examples:
        >>> import torch
        >>> from segmix.shuffle import SegMix
        >>> images = torch.arange(2.0)[:, None, None, None].expand(2, 3, 4, 4)  # image b is all b
        >>> masks = torch.tensor([0, 1])[:, None, None].expand(2, 4, 4)
        >>> labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> x, m, w, _ = mosaic_batch(SegMix(2, ratio=1.0), images, masks, labels, exact_weight=3.0)
        >>> bool((x[:, 0] == m).all()), w[0].unique().tolist(), w[1].unique().tolist()  # masks moved with pixels
        (True, [1.0], [3.0])
    """
    mixed, mixed_labels, info = mixer(images, labels, generator)
    single = ((labels > 0.5).sum(dim=1) == 1).float()
    weights = 1 + (exact_weight - 1) * single[:, None, None].expand(masks.shape).clone()
    if info.applied:
        ps = info.patch_size
        masks = shuffle_patches(masks[:, None], info.source, ps)[:, 0]
        cell = 1 + (exact_weight - 1) * single[info.source]
        core = cell.repeat_interleave(ps, dim=1).repeat_interleave(ps, dim=2)
        weights[:, : core.shape[1], : core.shape[2]] = core
    return mixed, masks, weights * (masks != IGNORE_INDEX), mixed_labels
