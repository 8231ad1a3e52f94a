"""SegMix: in-place patch shuffle across a batch, with area-mixed multi-label targets.

Paper:
SegMix: shuffle-based feedback learning for weakly-supervised semantic segmentation of
histopathology images (https://arxiv.org/abs/2604.15777)

Each image of a batch is cut into a grid of ``patch_size`` patches. At a share ``ratio`` of the
grid positions, the patch at that position is replaced by the patch *at the same position* of
another image of the batch; the other positions stay. Tissue keeps its absolute place while
new neighbourhoods appear, and the source of every patch is known, so targets mix the source
labels by area and later stages can supervise CAMs patch by patch.

Design choices (measured in ``benchmarks/shuffle_speed.py``):

- One permutation per selected *position*, not one per batch: an image then mixes tissue from
  up to ``B - 1`` others instead of one partner, which is what separates this from CutMix.
- Each permutation is a random single cycle over the batch (a derangement), so every selected
  position really receives a patch from another image; a plain random permutation would leave
  ~1/B of them in place and make ``ratio`` overstate the mixing.
- The ragged border that ``patch_size`` does not divide stays in place and counts as the
  image's own area, so areas are exact for any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segmix.section import Section
from segmix.shuffle.ladder import Level
from segmix.shuffle.registry import register_mixer

__all__ = ["LABEL_MIXERS", "MixInfo", "SegMix", "SegMixKnobs", "area_matrix", "draw_sources", "shuffle_patches"]


@dataclass(frozen=True)
class MixInfo:
    """What a mixer did to a batch.

    Attributes:
        source: long (B, gh, gw), the batch index each grid patch came from (None for mixers
            without a grid, e.g. CutMix / MixUp).
        area: float (B, B), ``area[i, j]`` = share of image i's pixels that came from image j;
            rows sum to 1.
        patch_size: grid patch edge in pixels (None without a grid).
        applied: False when the batch was passed through unchanged (probability ``p``).
    """

    source: Tensor | None
    area: Tensor
    patch_size: int | None
    applied: bool

    def cell_labels(self, labels: Tensor) -> Tensor:
        """Label of the source image of every patch: (B, K) -> (B, gh, gw, K)."""
        if self.source is None:
            raise ValueError("this mixer has no patch grid")
        return labels[self.source]


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    # Draw on the generator's device so a CPU generator gives the same stream for CUDA batches.
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def draw_sources(
    batch: int,
    positions: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Source batch index for every (image, grid position).

    Args:
        batch: B, images in the batch.
        positions: N, grid positions per image.
        ratio: share of positions to swap; ``round(ratio * N)`` of them are chosen.

    Returns:
        long (B, N): ``b`` where the patch stays, another image's index where it is swapped.

    Examples:
        >>> import torch
        >>> source = draw_sources(4, 6, 0.5, torch.Generator().manual_seed(0))
        >>> source.shape, int((source != torch.arange(4)[:, None]).sum(dim=1)[0])  # 3 of 6 swapped
        (torch.Size([4, 6]), 3)
    """
    device = torch.device(device)
    own = torch.arange(batch, device=device)
    source = own[:, None].expand(batch, positions).clone()
    n_swap = int(round(min(max(ratio, 0.0), 1.0) * positions))
    # Drawn before the early return: how many numbers a call consumes depends on
    # (positions, n_swap, B) only, not on whether anything moves.
    chosen = _rand((positions,), generator, device).argsort()[:n_swap]
    order = _rand((n_swap, batch), generator, device).argsort(dim=1)
    if batch < 2 or n_swap == 0:
        return source
    # A single cycle through a random order: image order[i] takes from order[i + 1].
    cycle = torch.empty_like(order).scatter_(1, order, order.roll(-1, dims=1))
    source[:, chosen] = cycle.T
    return source


def area_matrix(source: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """(B, gh, gw) source map -> float32 (B, B) area shares; the ragged border is the image's own.

    Examples:
        >>> import torch
        >>> source = torch.tensor([[[0, 1]], [[1, 1]]])  # image 0: left half own, right half from 1
        >>> area_matrix(source, patch_size=2, height=2, width=4).tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """
    batch = source.shape[0]
    counts = torch.zeros(batch, batch, dtype=torch.float32, device=source.device)
    counts.scatter_add_(1, source.reshape(batch, -1), torch.ones_like(source.reshape(batch, -1), dtype=torch.float32))
    counts *= patch_size * patch_size
    border = height * width - source[0].numel() * patch_size * patch_size
    counts.diagonal().add_(border)
    return counts / (height * width)


def _row_index(source: Tensor, patch_size: int, channels: int) -> Tensor:
    """Row indices that assemble the mixed core from rows of one patch width.

    NCHW memory is read as rows of ``patch_size`` pixels, indexed (b, c, i, r, j); with
    ``channels`` = 1 the same formula serves NHWC memory read as rows of ``patch_size * C``,
    indexed (b, i, r, j). Row (b, c, i, r, j) of the output is row (source[b, i, j], c, i, r, j)
    of the input.
    """
    batch, gh, gw = source.shape
    dev = source.device
    src = source[:, None, :, None, :]  # (B, 1, gh, 1, gw)
    c = torch.arange(channels, device=dev)[None, :, None, None, None]
    i = torch.arange(gh, device=dev)[None, None, :, None, None]
    r = torch.arange(patch_size, device=dev)[None, None, None, :, None]
    j = torch.arange(gw, device=dev)[None, None, None, None, :]
    return ((((src * channels + c) * gh + i) * patch_size + r) * gw + j).reshape(-1)


def shuffle_patches(images: Tensor, source: Tensor, patch_size: int) -> Tensor:
    """Images (B, C, H, W) whose grid patch (b, i, j) comes from image ``source[b, i, j]``.

    Dtype, device and memory format (channels_last too) are kept; the input is not modified.
    One row gather builds the tiled core, so the cost is about one copy of the batch.
    """
    batch, channels, height, width = images.shape
    gh, gw = source.shape[1:]
    ps = patch_size
    hc, wc = gh * ps, gw * ps
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        core = images.permute(0, 2, 3, 1)[:, :hc, :wc].contiguous()  # (B, hc, wc, C), no copy if exact
        rows = core.view(-1, ps * channels)
        mixed = rows.index_select(0, _row_index(source, ps, 1)).view(batch, hc, wc, channels).permute(0, 3, 1, 2)
    else:
        core = images[:, :, :hc, :wc].contiguous()
        rows = core.view(-1, ps)
        mixed = rows.index_select(0, _row_index(source, ps, channels)).view(batch, channels, hc, wc)
    if (hc, wc) == (height, width):
        return mixed
    out = images.clone()
    out[:, :, :hc, :wc] = mixed
    return out


def mix_area(area: Tensor, labels: Tensor) -> Tensor:
    """Each class gets the share of the image that came from images carrying it: (B, K)."""
    # Elementwise, not a matmul: autocast would run a matmul in bf16 and round the targets.
    return (area[:, :, None] * labels[None].to(area.dtype)).sum(dim=1).clamp_(0.0, 1.0)


def mix_union(area: Tensor, labels: Tensor) -> Tensor:
    """A class is present if any contributing image has it (max over sources): (B, K)."""
    present = (area > 0).to(labels.dtype if labels.is_floating_point() else torch.float32)
    return (present[:, :, None] * labels[None].to(present.dtype)).amax(dim=1)


LABEL_MIXERS = {"area": mix_area, "union": mix_union}


class SegMixKnobs(Section):
    label_mix: str = Field(
        "union", description="targets of mixed images: union or area (why union: docs/results/defaults.md)"
    )

    @field_validator("label_mix")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LABEL_MIXERS:
            raise ValueError(f"unknown label_mix {v!r}; known: {', '.join(LABEL_MIXERS)}")
        return v


class SegMix:
    """In-place batch patch shuffle with mixed multi-label targets.

    Args:
        patch_size: edge of the square grid patches in pixels; set by a curriculum between
            batches. Must not exceed the image's shorter side.
        ratio: share of grid positions whose patch is swapped, in [0, 1].
        p: probability of mixing a batch at all; unmixed batches pass through unchanged.
        label_mix: how targets are mixed, a key of :data:`LABEL_MIXERS` (``area``, ``union``).
            ``union`` is the default by measurement: on the synthetic benchmark it gave pseudo
            masks 1.8 mIoU points better than ``area`` (3 seeds, ``benchmarks/stage1_mixers.py``).

    Call ``mixer(images, labels, generator=None)`` with images (B, C, H, W) of any dtype and
    labels (B, K) multi-hot or soft. Returns ``(images, targets, info)``: the mixed images (a new
    tensor; the input is not modified), float targets (B, K) for a soft-label BCE, and a
    :class:`MixInfo`.
    """

    def __init__(
        self, patch_size: int = 32, ratio: float = 0.5, p: float = 1.0, label_mix: str = SegMixKnobs().label_mix
    ) -> None:
        if label_mix not in LABEL_MIXERS:
            raise ValueError(f"label_mix must be one of {sorted(LABEL_MIXERS)}, got {label_mix!r}")
        if not 0.0 <= ratio <= 1.0 or not 0.0 <= p <= 1.0:
            raise ValueError(f"ratio and p must lie in [0, 1], got ratio={ratio}, p={p}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = int(patch_size)
        self.ratio = float(ratio)
        self.p = float(p)
        self.label_mix = label_mix

    def __repr__(self) -> str:
        return f"SegMix(patch_size={self.patch_size}, ratio={self.ratio}, p={self.p}, label_mix={self.label_mix!r})"

    def __call__(
        self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, MixInfo]:
        if images.ndim != 4 or labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"expected images (B, C, H, W) and labels (B, K), got {tuple(images.shape)}, {tuple(labels.shape)}"
            )
        batch, _, height, width = images.shape
        ps = self.patch_size
        if ps > min(height, width):
            raise ValueError(f"patch_size {ps} exceeds the image size {height}x{width}")
        gh, gw = height // ps, width // ps
        targets = labels if labels.is_floating_point() else labels.float()
        apply = bool(_rand((1,), generator, images.device).item() < self.p)
        source = draw_sources(batch, gh * gw, self.ratio if apply else 0.0, generator, images.device)
        source = source.view(batch, gh, gw)
        area = area_matrix(source, ps, height, width)
        if not apply:
            return images, targets, MixInfo(source, area, ps, applied=False)
        mixed = shuffle_patches(images, source, ps)
        return mixed, LABEL_MIXERS[self.label_mix](area, targets), MixInfo(source, area, ps, applied=True)


@register_mixer("segmix", SegMixKnobs, grid=True, description="in-place grid patch shuffle across the batch")
def _segmix(probability: float, level: Level, label_mix: str) -> SegMix:
    return SegMix(level.patch_size, level.ratio, probability, label_mix)
