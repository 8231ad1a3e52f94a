"""Stage-1 batch mixing: the SegMix shuffle, its curricula, and baselines behind one registry.

>>> from segmix.shuffle import SegMix
>>> mixer = SegMix(patch_size=32, ratio=0.5)
>>> images2, targets2, info = mixer(images, labels)           # doctest: +SKIP

Methods for ablation are named in :data:`METHODS` and built with :func:`create_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segmix.shuffle.baselines import NoMix, TimmMix
from segmix.shuffle.curriculum import (
    CURRICULA,
    FeedbackCurriculum,
    FixedCurriculum,
    Level,
    ScheduledCurriculum,
    build_levels,
    create_curriculum,
    patch_ladder,
)
from segmix.shuffle.segmix import LABEL_MIXERS, MixInfo, SegMix

__all__ = [
    "SegMix",
    "MixInfo",
    "NoMix",
    "TimmMix",
    "LABEL_MIXERS",
    "Level",
    "patch_ladder",
    "build_levels",
    "FixedCurriculum",
    "ScheduledCurriculum",
    "FeedbackCurriculum",
    "CURRICULA",
    "create_curriculum",
    "METHODS",
    "Method",
    "create_method",
]


@dataclass(frozen=True)
class Method:
    """A named mixing method: which mixer, driven by which curriculum (None: no curriculum)."""

    mixer: str
    curriculum: str | None = None


MIXERS = {
    "none": lambda **kw: NoMix(),
    "cutmix": lambda alpha=1.0, p=1.0, **kw: TimmMix("cutmix", alpha, p),
    "mixup": lambda alpha=1.0, p=1.0, **kw: TimmMix("mixup", alpha, p),
    "segmix": lambda patch_size=32, ratio=0.5, p=1.0, label_mix="union", **kw: SegMix(patch_size, ratio, p, label_mix),
}

METHODS: dict[str, Method] = {
    "none": Method("none"),
    "cutmix": Method("cutmix"),
    "mixup": Method("mixup"),
    "shuffle-fixed": Method("segmix", "fixed"),
    "shuffle-scheduled": Method("segmix", "scheduled"),
    "segmix": Method("segmix", "feedback"),
}


def create_method(
    name: str,
    levels: list[Level] | None = None,
    mixer_args: dict[str, Any] | None = None,
    curriculum_args: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Build ``(mixer, curriculum)`` for a method of :data:`METHODS`; curriculum is None for
    methods without one. Curriculum methods need ``levels`` (see :func:`build_levels`)."""
    if name not in METHODS:
        raise ValueError(f"unknown mixing method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name]
    mixer = MIXERS[method.mixer](**(mixer_args or {}))
    if method.curriculum is None:
        return mixer, None
    if not levels:
        raise ValueError(f"method {name!r} needs a ladder of levels")
    return mixer, create_curriculum(method.curriculum, mixer, levels, **(curriculum_args or {}))
