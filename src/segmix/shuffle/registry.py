"""The mixers and mixing methods of stage 1, by name.

A *mixer* turns a batch into a mixed batch (:class:`Mixer`); a *method* pairs a mixer with the
curriculum that drives it (None: a constant setting). Factories are strict, as timm's
``create_model``: an unknown name or argument raises and lists the known ones, so a typo in a
config never silently falls back to a default.

>>> mixer, curriculum = create_method("segmix", levels, {"label_mix": "union"})   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segmix.shuffle.baselines import NoMix, TimmMix
from segmix.shuffle.curriculum import (
    Curriculum,
    FeedbackCurriculum,
    FixedCurriculum,
    GainCurriculum,
    Level,
    MasteryCurriculum,
    ScheduledCurriculum,
)
from segmix.shuffle.mixer import Mixer
from segmix.shuffle.segmix import LABEL_MIXERS, SegMix

__all__ = [
    "CURRICULA",
    "LABEL_MIXERS",
    "METHODS",
    "MIXERS",
    "Method",
    "create_curriculum",
    "create_method",
    "create_mixer",
]


def _no_mix() -> NoMix:
    return NoMix()


def _cutmix(alpha: float = 1.0, p: float = 1.0) -> TimmMix:
    return TimmMix("cutmix", alpha, p)


def _mixup(alpha: float = 1.0, p: float = 1.0) -> TimmMix:
    return TimmMix("mixup", alpha, p)


def _segmix(patch_size: int = 32, ratio: float = 0.5, p: float = 1.0, label_mix: str = "union") -> SegMix:
    return SegMix(patch_size, ratio, p, label_mix)


MIXERS: dict[str, Callable[..., Mixer]] = {"none": _no_mix, "cutmix": _cutmix, "mixup": _mixup, "segmix": _segmix}


@dataclass(frozen=True)
class Method:
    """A named mixing method: which mixer, driven by which curriculum (None: no curriculum)."""

    mixer: str
    curriculum: str | None = None


METHODS: dict[str, Method] = {
    "none": Method("none"),
    "cutmix": Method("cutmix"),
    "mixup": Method("mixup"),
    "shuffle-fixed": Method("segmix", "fixed"),
    "shuffle-scheduled": Method("segmix", "scheduled"),
    "segmix": Method("segmix", "mastery"),
    "segmix-loss": Method("segmix", "feedback"),
    "segmix-gain": Method("segmix", "gain"),
}


def check_args(what: str, factory: Callable[..., Any], args: dict[str, Any]) -> None:
    """Refuse arguments that ``factory`` does not take, listing those it does."""
    known = list(inspect.signature(factory).parameters)
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")


def create_mixer(name: str, **args: Any) -> Mixer:
    """A mixer of :data:`MIXERS` by name, with its arguments (unknown ones raise)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; known: {', '.join(MIXERS)}")
    check_args(f"mixer {name!r}", MIXERS[name], args)
    return MIXERS[name](**args)


CURRICULA: dict[str, type[Curriculum]] = {
    "fixed": FixedCurriculum,
    "scheduled": ScheduledCurriculum,
    "feedback": FeedbackCurriculum,
    "mastery": MasteryCurriculum,
    "gain": GainCurriculum,
}


def create_curriculum(name: str, mixer: Mixer, levels: list[Level], **args: Any) -> Curriculum:
    """A curriculum of :data:`CURRICULA` by name, driving ``mixer`` over ``levels``."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; known: {', '.join(CURRICULA)}")
    takes = {k: v for k, v in inspect.signature(CURRICULA[name]).parameters.items() if k not in ("mixer", "levels")}
    unknown = sorted(set(args) - set(takes))
    if unknown:
        raise ValueError(
            f"curriculum {name!r}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(takes) or 'none'}"
        )
    return CURRICULA[name](mixer, levels, **args)


def create_method(
    name: str,
    levels: list[Level] | None = None,
    mixer_args: dict[str, Any] | None = None,
    curriculum_args: dict[str, Any] | None = None,
) -> tuple[Mixer, Curriculum | None]:
    """``(mixer, curriculum)`` for a method of :data:`METHODS`; the curriculum is None for
    methods without one. Curriculum methods need ``levels`` (see
    :func:`~segmix.shuffle.curriculum.build_levels`); arguments a method does not take raise."""
    if name not in METHODS:
        raise ValueError(f"unknown mixing method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name]
    mixer = create_mixer(method.mixer, **(mixer_args or {}))
    if method.curriculum is None:
        if curriculum_args:
            raise ValueError(
                f"method {name!r} has no curriculum; got curriculum arguments {', '.join(sorted(curriculum_args))}"
            )
        return mixer, None
    if not levels:
        raise ValueError(f"method {name!r} needs a ladder of levels")
    return mixer, create_curriculum(method.curriculum, mixer, levels, **(curriculum_args or {}))
