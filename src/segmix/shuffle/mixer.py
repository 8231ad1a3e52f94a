"""The interface every stage-1 mixer has (SegMix, the baselines), as a typing protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from segmix.shuffle.segmix import MixInfo

__all__ = ["MixInfo", "Mixer"]


@runtime_checkable
class Mixer(Protocol):
    """What stage 1 and the curricula need of a mixer.

    ``patch_size`` is the grid patch edge (None for mixers without a grid); ``ratio`` is, on grid
    mixers, the share of grid positions swapped (on CutMix / MixUp, the probability of mixing a
    batch; 0 without mixing). Curricula set both between batches on grid mixers.
    ``mixer(images, labels, generator)`` takes images (B, C, H, W) and labels (B, K) and returns
    ``(mixed images, float targets (B, K), MixInfo)``.
    """

    patch_size: int | None
    ratio: float

    def __call__(
        self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, MixInfo]: ...
