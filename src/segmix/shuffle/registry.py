"""Mixers, curriculum rules and the methods that pair them, registered where they are defined.

As timm registers models: a mixer (``@register_mixer``) or a curriculum rule
(``@register_curriculum``) comes with its knobs, a :class:`~segmix.section.Section` holding their
defaults, bounds and descriptions (the one source of them), and what it needs. A *method* pairs a
mixer with the curriculum that drives it (None: a constant setting); stage 1, the report, the
config and the CLI read the methods from here, so a rule defined anywhere (a test file, a user's
module) is selectable by name once its module is imported.

Factories are strict: an unknown name or knob raises and lists the known ones.

Examples:
    >>> from segmix.shuffle import build_levels, create_method, list_methods
    >>> "segmix" in list_methods()
    True
    >>> mixer, curriculum = create_method("segmix", build_levels([56, 28], 0.25, 0.5), curriculum={"mastery": 0.8})
    >>> (mixer.patch_size, mixer.ratio, curriculum.mastery)
    (56, 0.25, 0.8)
    >>> create_method("segmix", build_levels([56], 0.25, 0.5), curriculum={"mastry": 0.8})
    Traceback (most recent call last):
    ...
    ValueError: curriculum 'mastery': unknown knob(s) mastry; known: warmup, warmup_off, mastery, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from segmix.errors import validation_problems
from segmix.section import Section
from segmix.shuffle.ladder import Level

__all__ = [
    "CURRICULA",
    "METHODS",
    "MIXERS",
    "SIGNALS",
    "Signal",
    "CurriculumEntry",
    "Method",
    "MixerEntry",
    "NoKnobs",
    "create_curriculum",
    "create_method",
    "create_mixer",
    "list_methods",
    "register_curriculum",
    "register_method",
    "register_mixer",
]

Signal = Literal["cell_accuracy", "val_miou", "train_loss", "val_loss", "val_f1"]
SIGNALS: tuple[str, ...] = get_args(Signal)


class NoKnobs(Section):
    """The knobs of a mixer or rule that has none."""


@dataclass(frozen=True)
class MixerEntry:
    """A registered mixer: ``factory(probability, level, **knobs)`` builds it; ``grid``: it cuts
    a patch grid with known sources (per-patch CAM loss, single-label share, probe)."""

    name: str
    factory: Callable[..., Any]
    knobs: type[Section]
    grid: bool
    description: str


@dataclass(frozen=True)
class CurriculumEntry:
    """A registered curriculum rule: ``factory(mixer, levels, **knobs)`` builds it (with
    ``total_steps`` when ``takes_steps``); ``signal``: what its feedback reads by default (None:
    no feedback); ``line``: the knob that is a score the rule advances at (the report draws it)."""

    name: str
    factory: Callable[..., Any]
    knobs: type[Section]
    signal: str | None
    takes_steps: bool
    description: str
    line: str | None = None


@dataclass(frozen=True)
class Method:
    """A named mixing method: which mixer, driven by which curriculum rule (None: no curriculum)."""

    name: str
    mixer: str
    curriculum: str | None = None
    description: str = ""

    @property
    def grid(self) -> bool:
        """Whether its mixer cuts a patch grid with known sources."""
        return MIXERS[self.mixer].grid

    def signal(self, override: str = "auto") -> str | None:
        """The feedback signal it reads: ``override`` unless ``auto``, else its rule's default
        (None without a curriculum or a rule without feedback)."""
        if self.curriculum is None or CURRICULA[self.curriculum].signal is None:
            return None
        return CURRICULA[self.curriculum].signal if override == "auto" else override


MIXERS: dict[str, MixerEntry] = {}
CURRICULA: dict[str, CurriculumEntry] = {}
METHODS: dict[str, Method] = {}


def _refuse_taken(kind: str, name: str, table: dict) -> None:
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")


def register_mixer(
    name: str, knobs: type[Section] = NoKnobs, grid: bool = False, description: str = "", method: bool = False
) -> Callable:
    """Decorator registering a mixer factory ``factory(probability, level, **knobs)`` (``level``:
    the ladder's first :class:`Level` for grid mixers, else None). ``method``: also a method of
    the same name, the mixer at a constant setting."""

    def add(factory: Callable) -> Callable:
        _refuse_taken("mixer", name, MIXERS)
        MIXERS[name] = MixerEntry(name, factory, knobs, grid, description)
        if method:
            register_method(name, name, None, description)
        return factory

    return add


def register_curriculum(
    name: str,
    knobs: type[Section] = NoKnobs,
    signal: str | None = None,
    takes_steps: bool = False,
    description: str = "",
    methods: dict[str, str] | None = None,
    mixer: str = "segmix",
    line: str | None = None,
) -> Callable:
    """Decorator registering a curriculum class ``cls(mixer, levels, **knobs)``. ``methods``:
    names (with descriptions) of the methods it makes with ``mixer``; ``line``: a knob of
    ``knobs`` that is the score it advances at."""
    if signal is not None and signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
    if line is not None and line not in knobs.model_fields:
        raise ValueError(f"line {line!r} is not a knob of {knobs.__name__}")

    def add(cls: Callable) -> Callable:
        _refuse_taken("curriculum", name, CURRICULA)
        CURRICULA[name] = CurriculumEntry(name, cls, knobs, signal, takes_steps, description, line)
        for method, text in (methods or {}).items():
            register_method(method, mixer, name, text)
        return cls

    return add


def register_method(name: str, mixer: str, curriculum: str | None = None, description: str = "") -> Method:
    """A method pairing a registered mixer with a registered curriculum rule (or none)."""
    _refuse_taken("method", name, METHODS)
    if mixer not in MIXERS:
        raise ValueError(f"method {name!r}: unknown mixer {mixer!r}; known: {', '.join(MIXERS)}")
    if curriculum is not None and curriculum not in CURRICULA:
        raise ValueError(f"method {name!r}: unknown curriculum {curriculum!r}; known: {', '.join(CURRICULA)}")
    METHODS[name] = Method(name, mixer, curriculum, description)
    return METHODS[name]


def list_methods() -> list[str]:
    """The registered method names, in registration order."""
    return list(METHODS)


def knob_values(what: str, knobs: type[Section], given: dict[str, Any] | None) -> dict[str, Any]:
    """``given`` checked against ``knobs`` and completed with its defaults; ValueError naming
    ``what`` and listing the known knobs for an unknown one, or the bad value."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(knobs.model_fields))
    if unknown:
        raise ValueError(
            f"{what}: unknown knob(s) {', '.join(unknown)}; known: {', '.join(knobs.model_fields) or 'none'}"
        )
    try:
        return knobs.model_validate(given).model_dump()
    except ValidationError as err:
        raise ValueError(f"{what}: {'; '.join(validation_problems(err, knobs))}") from None


def create_mixer(name: str, probability: float = 1.0, level: Level | None = None, **knobs: Any):
    """A registered mixer by name (grid mixers at ``level``, the ladder's first by default)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; known: {', '.join(MIXERS)}")
    entry = MIXERS[name]
    if entry.grid and level is None:
        raise ValueError(f"mixer {name!r} cuts a patch grid: give the level to start at")
    return entry.factory(probability, level, **knob_values(f"mixer {name!r}", entry.knobs, knobs))


def create_curriculum(name: str, mixer, levels: list[Level], total_steps: int | None = None, **knobs: Any):
    """A registered curriculum rule by name, driving ``mixer`` over ``levels``."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; known: {', '.join(CURRICULA)}")
    entry = CURRICULA[name]
    args = knob_values(f"curriculum {name!r}", entry.knobs, knobs)
    if entry.takes_steps:
        if total_steps is None:
            raise ValueError(f"curriculum {name!r} needs total_steps")
        args["total_steps"] = total_steps
    return entry.factory(mixer, levels, **args)


def create_method(
    name: str,
    levels: list[Level] | None = None,
    *,
    probability: float = 1.0,
    total_steps: int | None = None,
    mixer: dict[str, Any] | None = None,
    curriculum: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``(mixer, curriculum)`` of a registered method; the curriculum is None for methods without
    one. ``mixer`` / ``curriculum``: knobs of its mixer / rule (unknown ones raise). Grid methods
    need ``levels`` (:func:`~segmix.shuffle.build_levels`); the mixer starts at the first."""
    if name not in METHODS:
        raise ValueError(f"unknown mixing method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name]
    if (method.grid or method.curriculum) and not levels:
        raise ValueError(f"method {name!r} needs a ladder of levels")
    first = levels[0] if method.grid else None
    built = create_mixer(method.mixer, probability, first, **(mixer or {}))
    if method.curriculum is None:
        if curriculum:
            raise ValueError(f"method {name!r} has no curriculum; got curriculum knobs {', '.join(sorted(curriculum))}")
        return built, None
    return built, create_curriculum(method.curriculum, built, levels, total_steps, **(curriculum or {}))
