"""Stage-1 losses beyond the image-level BCE, and the localisation scores: on shuffled cells
(``cell_hits``) and of label-gated CAMs against pixel truth (``gated_confusion``).

What a shuffled batch knows about each grid cell: a cell from image j carries none of the
classes absent from j's label (certain negatives), and, when j has a single label, exactly that
class (a certain positive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segmix.data.io import IGNORE_INDEX
from segmix.models.gate import gated_argmax


def cell_logits(maps: Tensor, grid: tuple[int, int], patch_size: int, size: tuple[int, int]) -> Tensor:
    """Class maps (B, K, h, w) -> mean logit of every grid cell, float (B, K, gh, gw).

    The maps are upsampled to the image ``size`` (H, W) first, so cells need not align with the
    map's own pixels.
    """
    gh, gw = grid
    up = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return F.avg_pool2d(up[:, :, : gh * patch_size, : gw * patch_size], patch_size)


def patch_cam_loss(
    maps: Tensor,
    source: Tensor,
    patch_size: int,
    labels: Tensor,
    size: tuple[int, int],
) -> Tensor:
    """BCE of each grid cell's pooled class map against what is known of that cell.

    Certain negatives and single-label positives are known (module docstring); a class of a
    multi-label source is unknown and left out.

    Args:
        maps: float (B, K, h, w) per-location class logits.
        source: long (B, gh, gw) source image of every grid patch (:class:`MixInfo.source`).
        patch_size: grid patch edge in image pixels.
        labels: (B, K) multi-hot labels of the *unmixed* images.
        size: (H, W) of the images.

    Returns:
        scalar loss (0 when nothing is known).
    """
    cells = cell_logits(maps, tuple(source.shape[1:]), patch_size, size)  # (B, K, gh, gw)
    hard = (labels > 0.5).float()
    target = hard[source].permute(0, 3, 1, 2)  # (B, K, gh, gw)
    single = (hard.sum(dim=1) == 1)[source][:, None]  # (B, 1, gh, gw)
    known = ((target == 0) | single).float()
    bce = F.binary_cross_entropy_with_logits(cells, target, reduction="none")
    return (bce * known).sum() / known.sum().clamp(min=1.0)


def cell_hits(maps: Tensor, source: Tensor, patch_size: int, labels: Tensor, size: tuple[int, int]) -> Tensor:
    """How well the CAMs localise on a shuffled batch: ``(hits, cells)`` as float (2,).

    A cell counts when it holds a patch from another image and the mixed image has a class the
    patch's source lacks (otherwise any answer is right). It is a hit when its CAM's strongest
    class, among the mixed image's classes (the label gate of pseudo masks), is a class of the
    source. This is exactly what a pseudo mask gets right or wrong at that cell.

    Args: as :func:`patch_cam_loss`.
    """
    batch, gh, gw = source.shape
    cells = cell_logits(maps, (gh, gw), patch_size, size)
    hard = labels > 0.5
    present = hard[source]  # (B, gh, gw, K)
    gate = present.flatten(1, 2).any(dim=1)  # (B, K): classes of the mixed image
    own = torch.arange(batch, device=source.device).view(-1, 1, 1)
    counted = (source != own) & (gate[:, None, None] & ~present).any(dim=-1)
    gated = cells.permute(0, 2, 3, 1).masked_fill(~gate[:, None, None], float("-inf"))
    hit = present.gather(-1, gated.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return torch.stack([(hit & counted).sum(), counted.sum()]).float()


# A cell of a tile's mask counts as one class when that class covers this share of its tissue
# pixels, and tissue covers this share of the cell: a cell on a border has no single answer.
PROBE_PURITY = 0.75
PROBE_TISSUE = 0.5


def cell_truth(masks: Tensor, patch_size: int, num_classes: int, purity: float = 0.0, tissue: float = 0.0) -> Tensor:
    """The tissue class of every grid cell of (B, S, S) masks: long (B, gh, gw), -1 where unknown.

    A cell's class is its most frequent tissue class (index < ``num_classes``); it is unknown
    without tissue, when tissue covers under ``tissue`` of the cell, or when that class covers
    under ``purity`` of the cell's tissue (a border between classes has no single answer).
    """
    gh, gw = masks.shape[1] // patch_size, masks.shape[2] // patch_size
    m = masks[:, : gh * patch_size, : gw * patch_size].long()
    onehot = F.one_hot(m.clamp(0, num_classes), num_classes + 1)[..., :num_classes]
    share = F.avg_pool2d(onehot.permute(0, 3, 1, 2).float(), patch_size)  # each class's share of the cell
    covered, cls = share.sum(1), share.argmax(1)
    top = share.gather(1, cls[:, None])[:, 0]
    known = (covered > 0) & (covered >= tissue) & (top >= purity * covered)
    return torch.where(known, cls, -1)


def probe_truth(masks: Tensor, labels: Tensor, patch_size: int) -> Tensor:
    """The known class of every grid cell of each unmixed held-out tile: long (B, gh, gw), -1
    where unknown. From the tile's mask where it has one (:func:`cell_truth` with
    :data:`PROBE_PURITY` and :data:`PROBE_TISSUE`); else, for a single-label tile, its label.

    Args:
        masks: (B, S, S) class indices (values >= K: background, excluded; all ``IGNORE_INDEX``:
            the tile has no mask).
        labels: (B, K) multi-hot labels.
    """
    from_mask = cell_truth(masks, patch_size, labels.shape[1], PROBE_PURITY, PROBE_TISSUE)
    has_mask = (masks.long() != IGNORE_INDEX).flatten(1).any(1)[:, None, None]  # glass only is still a mask
    hard = labels > 0.5
    single = torch.where(hard.sum(1) == 1, hard.float().argmax(1), -1)[:, None, None].expand_as(from_mask)
    return torch.where(has_mask, from_mask, single)


def probe_hits(maps: Tensor, source: Tensor, patch_size: int, labels: Tensor, truth: Tensor, size) -> Tensor:
    """The feedback probe on a shuffled batch: ``(hits, cells)`` as float (2,).

    A cell counts when its class is known (``truth`` of its source tile, :func:`probe_truth`) and
    the mixed image holds another class (else any answer is right); it is a hit when its CAM's
    strongest class among the mixed image's classes (the label gate of pseudo masks) is that
    class: what a pseudo mask gets right or wrong there. Unlike :func:`cell_hits`, cells of
    multi-label tiles count too, own cells as well as swapped ones.

    Args: as :func:`patch_cam_loss`; ``truth`` long (B, gh, gw) per unmixed tile.
    """
    _, gh, gw = source.shape
    cells = cell_logits(maps, (gh, gw), patch_size, size)
    rows = torch.arange(gh, device=source.device).view(1, -1, 1)
    cols = torch.arange(gw, device=source.device).view(1, 1, -1)
    known = truth[source, rows, cols]  # in-place shuffle: a patch keeps its cell
    gate = (labels > 0.5)[source].flatten(1, 2).any(dim=1)  # (B, K): classes of the mixed image
    counted = (known >= 0) & (gate.sum(1) >= 2)[:, None, None]
    gated = cells.permute(0, 2, 3, 1).masked_fill(~gate[:, None, None], float("-inf"))
    hit = gated.argmax(dim=-1) == known
    return torch.stack([(hit & counted).sum(), counted.sum()]).float()


def gated_confusion(maps: Tensor, labels: Tensor, masks: Tensor) -> Tensor:
    """Confusion (truth x prediction) of label-gated CAMs against pixel truth: float (K, K).

    The prediction at a pixel is the upsampled CAM's strongest class among the tile's own labels
    (a pseudo mask without background handling); pixels whose truth is not a class (glass,
    ignore) are left out.

    Args:
        maps: float (B, K, h, w) per-location class logits.
        labels: (B, K) multi-hot labels.
        masks: integer (B, H, W) truth, values >= K not counted.
    """
    k = maps.shape[1]
    pred = gated_argmax(maps, labels > 0.5, masks.shape[-2:])
    truth = masks.long()
    tissue = truth < k
    return torch.bincount(truth[tissue] * k + pred[tissue], minlength=k * k).view(k, k).float()
