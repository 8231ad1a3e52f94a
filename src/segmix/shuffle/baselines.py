"""Baseline mixers in the :class:`~segmix.shuffle.segmix.SegMix` interface.

``NoMix`` passes batches through. ``TimmMix`` wraps :class:`timm.data.Mixup` for CutMix and
MixUp with multi-label targets (``multi_label=True``, no label smoothing). To learn the exact
area matrix without reaching into timm's internals, the identity matrix of the batch is
appended to the targets: timm mixes it with the same weights as the labels, so those extra
columns come back as ``area[i, j]``, the share of image i taken from image j (its blend weight
for MixUp).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from timm.data import Mixup
from torch import Tensor

from segmix.section import Section
from segmix.shuffle.ladder import Level
from segmix.shuffle.registry import register_mixer
from segmix.shuffle.segmix import MixInfo


def _identity_info(batch: int, device: torch.device) -> MixInfo:
    return MixInfo(source=None, area=torch.eye(batch, device=device), patch_size=None, applied=False)


class NoMix:
    """No mixing: the plain multi-label CAM baseline."""

    patch_size = None
    ratio = 0.0

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None):
        targets = labels if labels.is_floating_point() else labels.float()
        return images, targets, _identity_info(images.shape[0], images.device)


class TimmMix:
    """CutMix or MixUp from timm, on multi-hot targets.

    Args:
        mode: ``"cutmix"`` or ``"mixup"``.
        alpha: Beta(alpha, alpha) parameter of the mixing weight.
        p: probability of mixing a batch.

    timm pairs image i with image B-1-i and needs an even batch; with an odd batch the last
    image is left unmixed. timm draws from numpy's global generator: when ``generator`` is
    given, numpy is seeded from it for the call and its earlier state restored afterwards.
    """

    patch_size = None

    def __init__(self, mode: str = "cutmix", alpha: float = 1.0, p: float = 1.0) -> None:
        if mode not in ("cutmix", "mixup"):
            raise ValueError(f"mode must be 'cutmix' or 'mixup', got {mode!r}")
        self.mode, self.alpha, self.p = mode, float(alpha), float(p)
        self.ratio = self.p

    def __repr__(self) -> str:
        return f"TimmMix(mode={self.mode!r}, alpha={self.alpha}, p={self.p})"

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None):
        batch, k = labels.shape
        targets = labels if labels.is_floating_point() else labels.float()
        even = batch - batch % 2
        if even < 2:
            return images, targets, _identity_info(batch, images.device)
        mixer = Mixup(
            mixup_alpha=self.alpha if self.mode == "mixup" else 0.0,
            cutmix_alpha=self.alpha if self.mode == "cutmix" else 0.0,
            prob=self.p,
            mode="batch",
            label_smoothing=0.0,
            num_classes=k + even,
            multi_label=True,
        )
        dense = torch.cat([targets[:even], torch.eye(even, device=targets.device, dtype=targets.dtype)], dim=1)
        out = images.clone()
        state = None
        if generator is not None:
            state = np.random.get_state()
            np.random.seed(int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device)))
        try:
            out[:even], mixed = mixer(out[:even], dense)
        finally:
            if state is not None:
                np.random.set_state(state)
        new_targets = targets.clone()
        new_targets[:even] = mixed[:, :k]
        area = torch.eye(batch, device=images.device)
        area[:even, :even] = mixed[:, k:].float()
        applied = not torch.equal(area, torch.eye(batch, device=images.device))
        return out, new_targets, MixInfo(source=None, area=area, patch_size=None, applied=applied)


class BetaKnobs(Section):
    alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) parameter of the mixing weight")


@register_mixer("none", description="no mixing: plain multi-label CAM", method=True)
def _no_mix(probability: float, level: Level | None) -> NoMix:
    return NoMix()


@register_mixer("cutmix", BetaKnobs, description="CutMix (timm): a box pasted from a partner image", method=True)
def _cutmix(probability: float, level: Level | None, alpha: float) -> TimmMix:
    return TimmMix("cutmix", alpha, probability)


@register_mixer("mixup", BetaKnobs, description="MixUp (timm): a blend with a partner image", method=True)
def _mixup(probability: float, level: Level | None, alpha: float) -> TimmMix:
    return TimmMix("mixup", alpha, probability)
