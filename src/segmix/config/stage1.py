"""Stage 1's config: the CAM classifier, its mixing method and curriculum.

The mixers' and curriculum rules' knobs are not declared here: each is registered with its
``Knobs`` section where it is defined (:mod:`segmix.shuffle`), and :class:`KnobSections` holds
them under their names (``mixing.segmix.label_mix``, ``curriculum.mastery.mastery``), so a rule
registered anywhere is configured like the built-in ones.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from segmix.config.names import check_backbone
from segmix.config.stages import (
    MOVED_COMMON,
    AugmentSection,
    RunOptions,
    StainSection,
    TrainSection,
)
from segmix.errors import REMOVED_NOTE
from segmix.section import Section
from segmix.shuffle import CURRICULA, METHODS, MIXERS, Level, build_levels, patch_ladder
from segmix.shuffle.registry import Signal, knob_values


class ClassifierModel(Section):
    """The stage-1 network (:class:`segmix.models.CamClassifier`)."""

    backbone: str = Field("resnet18", description="timm model name (or hf-hub:ORG/NAME)")
    pretrained: bool = Field(False, description="timm's pretrained weights (downloads; offline: use weights)")
    weights: str | None = Field(None, description="local backbone weights file, or pkg:NAME")
    output_stride: int | None = Field(16, description="backbone stride: CAMs are image_size / output_stride wide")
    pool: str = Field("avg", description="CAM pooling to image logits: avg, max or lse")
    trainable_blocks: int | None = Field(
        None, ge=0, description="null: train all; 0: the class head only (frozen backbone); N: head + last N ViT blocks"
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        return check_backbone(v)


def _moved_places(section: str, table: dict[str, list[str]]) -> dict[str, str]:
    """``{key: "section.entry.key / ..."}``: where each key of the layout before the registry went."""
    return {key: " / ".join(f"{section}.{entry}.{key}" for entry in entries) for key, entries in table.items()}


def _move_under_entries(section: dict, table: dict[str, list[str]]) -> None:
    """Move, in place, each key of ``table`` found in ``section`` (a value, not an entry's
    section) into the section of every entry it names."""
    for key, entries in table.items():
        if key in section and not isinstance(section[key], dict):
            value = section.pop(key)
            for entry in entries:
                section.setdefault(entry, {})[key] = value


# The keys the registry moved under their entries' names, and the entries that took them.
_MIXER_KNOBS = {"label_mix": ["segmix"], "alpha": ["cutmix", "mixup"]}
_RULE_KNOBS = {
    "mastery": ["mastery"],
    "collapse": ["mastery"],
    "min_gain": ["mastery"],
    "drop": ["gain"],
    "dwell": ["gain"],
    "mode": ["loss"],
    "advance": ["loss"],
    "tighten": ["loss"],
    "backoff": ["loss"],
    "warmup": ["mastery", "gain", "loss"],
    "warmup_off": ["mastery", "gain", "loss"],
}


class KnobSections(Section):
    """A section that also holds, under each registered name of ``registry``, that entry's knobs
    (a dict checked against its ``Knobs`` section, defaults filled in); a name whose entry has no
    knobs gets no key. ``moved_knobs``: keys of the layout before the registry and their new
    places (refused with them; :func:`upgrade_flat_config` moves them in files segmix wrote)."""

    model_config = ConfigDict(extra="allow")
    section: ClassVar[str] = ""
    moved_knobs: ClassVar[dict[str, str]] = {}
    # Keys and entries' knobs of lost experiments: refused with REMOVED_NOTE, dropped from files segmix wrote.
    removed_keys: ClassVar[tuple[str, ...]] = ()
    removed_knobs: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def registry(cls) -> dict:
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _knob_sections(cls, raw):
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        entries = {name: e for name, e in cls.registry().items() if e.knobs.model_fields}
        for key in [k for k in raw if k not in cls.model_fields]:
            if key in entries and isinstance(raw[key], dict):
                continue
            if key in cls.moved_knobs:
                raise ValueError(f"{key}: moved to {cls.moved_knobs[key]}")
            if key in cls.removed_keys:
                raise ValueError(f"{key}: {REMOVED_NOTE}")
            known = ", ".join([*cls.model_fields, *entries])
            raise ValueError(f"{key}: unknown key; known: {known}")
        for name, entry in entries.items():
            if gone := sorted(set(raw.get(name) or ()) & set(cls.removed_knobs.get(name, ()))):
                raise ValueError(f"{name}.{gone[0]}: {REMOVED_NOTE}")
            raw[name] = knob_values(f"{cls.section}.{name}", entry.knobs, raw.get(name))
        return raw

    def knobs(self, name: str) -> dict:
        """The knobs of the registered entry ``name`` ({} for one without knobs)."""
        return dict((self.model_extra or {}).get(name, {}))

    def knob_sections(self) -> dict[str, Section]:
        """Each registered entry's knobs as its ``Knobs`` section (for their descriptions)."""
        entries = self.registry()
        return {name: entries[name].knobs.model_validate(v) for name, v in (self.model_extra or {}).items()}


class MixingSection(KnobSections):
    """Which mixing method stage 1 uses (:func:`segmix.shuffle.list_methods`), the knobs all
    mixers share, and each mixer's own under its name (``mixing.segmix.label_mix``)."""

    section: ClassVar[str] = "mixing"
    moved_knobs: ClassVar[dict[str, str]] = _moved_places("mixing", _MIXER_KNOBS)
    removed_keys: ClassVar[tuple[str, ...]] = ("replay",)

    method: str = Field("segmix", description="a registered method (`segmix methods` lists them)")
    probability: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    single_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="grid mixers: share of each batch drawn from single-label tiles, class-balanced (0: off)",
    )

    @classmethod
    def registry(cls) -> dict:
        return MIXERS

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return _registered("method", v, METHODS)


class LadderSection(Section):
    """The curricula's levels, easiest first: patch sizes coarse to fine, each with its ratios."""

    moved_keys: ClassVar[dict[str, str]] = {"fixed_level": ".curriculum.fixed.level"}  # one section up

    patch_min: int = Field(14, ge=1, description="finest patch edge, pixels (at most half of train.image_size)")
    patch_levels: int = Field(3, ge=1, description="patch sizes on the ladder, coarse to fine")
    ratio_floor: float = Field(0.25, ge=0, le=1, description="share of grid positions swapped at the easiest level")
    ratio_ceiling: float = Field(0.5, ge=0, le=1, description="share swapped at the hardest level")
    ratio_steps: int = Field(2, ge=1, description="ratios per patch size")
    multiple_of: int = Field(1, ge=1, description="patch sizes are multiples of this (a ViT's token size)")

    def levels(self, image_size: int) -> list[Level]:
        """The ladder for tiles of ``image_size``; ValueError when it does not fit."""
        if self.patch_min > image_size // 2:
            raise ValueError(f"ladder.patch_min {self.patch_min} is more than half of train.image_size {image_size}")
        return build_levels(
            patch_ladder(image_size, self.patch_min, self.patch_levels, self.multiple_of),
            self.ratio_floor,
            self.ratio_ceiling,
            self.ratio_steps,
        )


class CurriculumConfig(KnobSections):
    """The feedback signal, the probe, and each curriculum rule's knobs under its name
    (``curriculum.mastery.mastery``, ``curriculum.gain.drop``, ``curriculum.fixed.level``; see
    :mod:`segmix.shuffle.rules`). ``signal: auto`` reads what the method's rule reads."""

    section: ClassVar[str] = "curriculum"
    moved_knobs: ClassVar[dict[str, str]] = _moved_places("curriculum", _RULE_KNOBS)
    removed_knobs: ClassVar[dict[str, tuple[str, ...]]] = {"mastery": ("patience",), "gain": ("patience",)}

    signal: Literal["auto"] | Signal = Field(
        "auto",
        description="what the feedback reads each epoch; auto: the rule's own (segmix: cell_accuracy, segmix-gain: "
        "val_miou, label-gated CAMs against the val split's masks; segmix-loss: train_loss)",
    )
    probe: Literal["known", "swapped"] = Field(
        "known",
        description="cell_accuracy counts: known, every held-out cell of known class (its mask's dominant class, "
        "or a single-label tile's) in a mixed image of two classes or more; swapped, only swapped cells whose "
        "source lacks a class of the mixed image (the earlier count: few cells on real tissue)",
    )
    probe_cells: int = Field(
        250,
        ge=1,
        description="known cells the probe should count at the first level (250: a reading's standard error "
        "<= 0.032, under the 0.05 collapse margin); fewer are reported at start",
    )

    @classmethod
    def registry(cls) -> dict:
        return CURRICULA


class Stage1Loss(Section):
    patch_cam_weight: float = Field(1.0, ge=0, description="weight of the per-patch CAM loss on grid mixers (0: off)")


MOVED_STAGE1 = {
    **MOVED_COMMON,
    "backbone": "model.backbone",
    "pretrained": "model.pretrained",
    "output_stride": "model.output_stride",
    "pool": "model.pool",
    "method": "mixing.method",
    "label_mix": "mixing.segmix.label_mix",
    "p": "mixing.probability",
    "mix_alpha": "mixing.cutmix.alpha",
    "patch_min": "ladder.patch_min",
    "patch_levels": "ladder.patch_levels",
    "ratio_floor": "ladder.ratio_floor",
    "ratio_ceiling": "ladder.ratio_ceiling",
    "ratio_steps": "ladder.ratio_steps",
    "fixed_level": "curriculum.fixed.level",
    "cell_loss": "loss.patch_cam_weight",
    "signal": "curriculum.signal",
}


def _knobs_under_names(cfg: dict) -> None:
    """Move, in place, the knobs of the layout before the registry to their entries' sections,
    and drop the removed ones."""
    curriculum = cfg.setdefault("curriculum", {})
    curriculum.pop("patience", None)  # the flat layout's: the mastery and gain rules', removed since
    if "fixed_level" in (cfg.get("ladder") or {}):  # the one key that changed section
        curriculum.setdefault("fixed", {})["level"] = cfg["ladder"].pop("fixed_level")
    for key in MixingSection.removed_keys:
        (cfg.get("mixing") or {}).pop(key, None)
    _move_under_entries(cfg.get("mixing") or {}, _MIXER_KNOBS)
    _move_under_entries(curriculum, _RULE_KNOBS)
    for name, removed in CurriculumConfig.removed_knobs.items():
        for key in removed:
            (curriculum.get(name) or {}).pop(key, None)
    # A plug-in's knobs, written by a process where it was registered: dropped where it is not
    # (a method of the plug-in's is still refused by name).
    for section, registry in (("mixing", MIXERS), ("curriculum", CURRICULA)):
        node = cfg.get(section) or {}
        for key in [k for k, v in node.items() if isinstance(v, dict) and k not in registry]:
            del node[key]


def _registered(field: str, value: str, known) -> str:
    if value not in known:
        raise ValueError(f"unknown {field} {value!r}; known: {', '.join(known)}")
    return value


class Stage1Config(RunOptions):
    """Multi-label CAM classifier trained with a batch mixer."""

    moved_keys: ClassVar[dict[str, str]] = MOVED_STAGE1
    # An experiment that lost where it was measured (CHANGELOG.md): dropped from the configs segmix
    # wrote itself, refused with this note in a config a person writes.
    removed_keys: ClassVar[tuple[str, ...]] = ("patch_pool",)

    model: ClassifierModel = ClassifierModel()
    train: TrainSection = TrainSection()
    stain: StainSection = StainSection()
    augment: AugmentSection = AugmentSection()
    mixing: MixingSection = MixingSection()
    ladder: LadderSection = LadderSection()
    loss: Stage1Loss = Stage1Loss()
    curriculum: CurriculumConfig = CurriculumConfig()

    @model_validator(mode="after")
    def _ladder_fits(self) -> Stage1Config:
        if self.train.batch_size < 2:
            raise ValueError("train.batch_size must be at least 2: a batch is mixed within itself")
        levels, fixed = self.levels(), self.curriculum.knobs("fixed")["level"]
        if fixed >= len(levels):
            raise ValueError(f"curriculum.fixed.level {fixed}: the ladder has levels 0..{len(levels) - 1}")
        return self

    def levels(self) -> list[Level]:
        """The curricula's ladder for this config's tile size."""
        return self.ladder.levels(self.train.image_size)

    @classmethod
    def upgrade_sections(cls, raw: dict) -> dict:
        _knobs_under_names(raw)
        return {k: v for k, v in raw.items() if k not in cls.removed_keys}
