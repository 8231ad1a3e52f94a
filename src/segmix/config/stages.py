"""The configs of the two training stages, in sections: ``model``, ``train``, ``augment``,
``loss`` (both), ``mixing``, ``ladder``, ``curriculum`` (stage 1), ``inference`` (stage 2).

How a stage runs (seed, devices, precision) stays at the top level (:class:`RunOptions`), the
same keys in both stages. Keys of the earlier flat layout are refused with their new name
(``--set epochs=5``: "moved to train.epochs", see :func:`segmix.config.load_config`); values are
checked against each other at
config time (a ladder that does not fit the tile, a fixed level past its end), never clamped.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segmix.config.names import check_backbone, check_encoder, check_segmenter_arch, segmenter_arch
from segmix.config.precision import PrecisionName
from segmix.shuffle.curriculum import FEEDBACK_RULE, GAIN_RULE, MASTERY_RULE, Level, build_levels, patch_ladder
from segmix.shuffle.registry import LABEL_MIXERS, METHODS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _bool_is_not_a_number(cls, value, info):
        # pydantic reads true as 1 for an int: `--set train.epochs=true` would train one epoch.
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) or (annotation,)
        if isinstance(value, bool) and bool not in kinds and (int in kinds or float in kinds):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


class RunOptions(Section):
    """How a training stage runs: seed, devices, precision, threads (the same keys in both stages)."""

    seed: int = Field(0, description="fixes data order, mixing, augmentation and initialisation")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes; null: what fits the cores (segmix.config.threads)"
    )
    threads: int | None = Field(None, ge=1, description="torch threads per process; null: the cores the workers leave")
    precision: PrecisionName = Field(
        "auto",
        description="auto: bf16 autocast on GPUs and CPUs with native bf16, fp16 AMP on older GPUs, fp32 elsewhere; "
        "or 32, 16, bf16",
    )
    accelerator: str = "auto"
    devices: int | str = Field("auto", description="GPUs (or CPU processes) per node")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description='"ddp" for several GPUs / nodes')


# Keys that say where a run executes, not what it learns: a run may resume with other values, and
# `segmix run`'s stage hashes leave them out.
PLACEMENT_KEYS = frozenset({"num_workers", "threads", "devices", "num_nodes", "strategy", "accelerator"})


class TrainSection(Section):
    """Optimisation: both stages resize tiles to ``image_size`` and train with AdamW + cosine."""

    image_size: int = Field(112, ge=16, description="training tiles (and stage-2 masks) are resized to this square")
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (cosine decay over the epochs)")
    weight_decay: float = Field(1e-4, ge=0)
    backbone_lr: float | None = Field(None, gt=0, description="learning rate of the pretrained backbone (null: lr)")


class AugmentSection(Section):
    hed_jitter: float = Field(0.05, ge=0, le=0.5, description="stain jitter in HED space, per channel")
    dihedral: bool = Field(True, description="random flips and 90-degree rotations")


class StainSection(Section):
    """Stain normalisation (torchstain): fitted when the stage trains, stored in its model file,
    applied wherever that model reads tiles (training, pseudo masks, evaluation, prediction)."""

    method: Literal["none", "macenko", "reinhard"] = Field("none", description="none (off), macenko or reinhard")
    reference: str | None = Field(None, description="reference tile (image file); null: fit to train tiles")
    fit_tiles: int = Field(32, ge=1, description="train tiles pooled for the fit when there is no reference")


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


class MixingSection(Section):
    """Which batch mixer stage 1 uses (:data:`segmix.shuffle.METHODS`), and its knobs."""

    method: str = Field(
        "segmix",
        description="none, cutmix, mixup, shuffle-fixed, shuffle-scheduled, segmix, segmix-gain, segmix-loss",
    )
    label_mix: str = Field("union", description='targets of mixed images; measured: +1.8 pseudo-mask mIoU over "area"')
    probability: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    alpha: float = Field(1.0, gt=0, description="CutMix / MixUp Beta parameter")
    single_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="grid mixers: share of each batch drawn from single-label tiles, class-balanced (0: off)",
    )
    replay: float = Field(
        0.0,
        ge=0,
        le=1,
        description="curricula: share of batches mixed at an easier level than the current, drawn uniformly (0: off)",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return _registered("method", v, METHODS)

    @field_validator("label_mix")
    @classmethod
    def _known_label_mix(cls, v: str) -> str:
        return _registered("label_mix", v, LABEL_MIXERS)


class LadderSection(Section):
    """The curricula's levels, easiest first: patch sizes coarse to fine, each with its ratios."""

    patch_min: int = Field(14, ge=1, description="finest patch edge, pixels (at most half of train.image_size)")
    patch_levels: int = Field(3, ge=1, description="patch sizes on the ladder, coarse to fine")
    ratio_floor: float = Field(0.25, ge=0, le=1, description="share of grid positions swapped at the easiest level")
    ratio_ceiling: float = Field(0.5, ge=0, le=1, description="share swapped at the hardest level")
    ratio_steps: int = Field(2, ge=1, description="ratios per patch size")
    fixed_level: int = Field(0, ge=0, description="the level shuffle-fixed keeps (0: easiest)")
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


class CurriculumConfig(Section):
    """The feedback curricula's signal and rules (see :mod:`segmix.shuffle.curriculum`).

    ``segmix`` uses the mastery rule on ``cell_accuracy``; ``segmix-gain`` the gain rule on
    ``val_miou``; ``segmix-loss`` the relative rule on the mixed-batch loss (``signal: auto``
    picks these).
    """

    signal: Literal["auto", "cell_accuracy", "val_miou", "train_loss", "val_loss", "val_f1"] = Field(
        "auto",
        description="what the feedback reads each epoch; auto: cell_accuracy (segmix), val_miou (segmix-gain: "
        "label-gated CAMs against the val split's masks), train_loss (segmix-loss)",
    )
    mastery: float = Field(
        MASTERY_RULE.mastery, gt=0, le=1, description="segmix: cell accuracy at which a level is mastered"
    )
    collapse: float = Field(
        MASTERY_RULE.collapse, ge=0, description="segmix: drop below the level's best score that steps back"
    )
    patience: int = Field(
        MASTERY_RULE.patience, ge=0, description="segmix, segmix-gain: epochs without a gain that advance (0: never)"
    )
    min_gain: float = Field(MASTERY_RULE.min_gain, ge=0, description="segmix: least rise that counts as improvement")
    drop: float = Field(
        GAIN_RULE.drop, ge=0, description="segmix-gain: fall below the best score so far that steps back"
    )
    dwell: int = Field(GAIN_RULE.dwell, ge=1, description="segmix-gain: least epochs at a level before it advances")
    mode: Literal["loss", "score"] = Field(
        FEEDBACK_RULE.mode, description="segmix-loss: loss (lower is better) or score (higher)"
    )
    advance: float = Field(
        FEEDBACK_RULE.advance, ge=0, lt=1, description="segmix-loss: relative gain over the level's reference"
    )
    tighten: float = Field(FEEDBACK_RULE.tighten, ge=0, description="segmix-loss: growth of that requirement per step")
    backoff: float = Field(
        FEEDBACK_RULE.backoff, ge=0, description="segmix-loss: relative loss over the level's best that steps back"
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
    warmup: int = Field(FEEDBACK_RULE.warmup, ge=0, description="epochs at level 0 before feedback starts")
    warmup_off: bool = Field(FEEDBACK_RULE.warmup_off, description="no mixing during warm-up")

    def rule(self, curriculum: str) -> dict:
        """The keyword arguments of the named curriculum's rule (``mastery``, ``gain`` or
        ``feedback``): the fields of its rule's constants (:data:`MASTERY_RULE`, :data:`GAIN_RULE`,
        :data:`FEEDBACK_RULE`)."""
        rule = {"mastery": MASTERY_RULE, "feedback": FEEDBACK_RULE, "gain": GAIN_RULE}[curriculum]
        return self.model_dump(include={f.name for f in fields(rule)})

    def signal_for(self, curriculum: str) -> str:
        """The signal the named curriculum reads (``auto`` resolved)."""
        if self.signal != "auto":
            return self.signal
        return {"mastery": "cell_accuracy", "gain": "val_miou"}.get(curriculum, "train_loss")


class PoolSection(Section):
    """A growing pool of patches labelled by the classifier's own confident CAMs (stage 1).

    After each epoch the cells (at the current patch size) of multi-label training tiles whose
    label-gated cell CAM is at least ``confidence`` sure of one class become known cells of the
    per-patch CAM loss; the share admitted grows with the curriculum's level up to ``share``.
    """

    share: float = Field(0.0, ge=0, le=1, description="share of multi-label cells admitted at the top level (0: off)")
    confidence: float = Field(0.9, ge=0.5, le=1, description="least softmax confidence over the tile's classes")


class Stage1Loss(Section):
    patch_cam_weight: float = Field(1.0, ge=0, description="weight of the per-patch CAM loss on grid mixers (0: off)")


class Stage2Loss(Section):
    dice_weight: float = Field(0.0, ge=0, description="weight of the Dice loss beside cross-entropy")


class Stage2Mixing(Section):
    """Stage 2 on SegMix mosaics: grid patches swapped in place across the batch, each mask moving
    with its pixels (:func:`segmix.train.mosaic.mosaic_batch`). A cell whose source tile has a
    single label is exact (its class everywhere but glass); its pixels weigh ``exact_weight``."""

    method: Literal["none", "shuffle"] = Field("none", description="none or shuffle (mosaics of the batch)")
    patch_size: int = Field(28, ge=1, description="grid cell edge in pixels (at train.image_size)")
    ratio: float = Field(0.5, ge=0, le=1, description="share of grid positions swapped")
    probability: float = Field(1.0, ge=0, le=1, description="probability that a batch is shuffled")
    single_share: float = Field(
        0.0, ge=0, lt=1, description="share of each batch drawn from single-label tiles, class-balanced (0: off)"
    )
    exact_weight: float = Field(1.0, ge=0, description="loss weight of pixels from single-label tiles (others: 1)")


class SegmenterModel(Section):
    """The stage-2 network (segmentation_models_pytorch)."""

    arch: str = Field("auto", description="smp architecture (DeepLabV3Plus, Unet, FPN, DPT...); auto: DPT for ViTs")
    encoder: str = Field("resnet18", description="smp encoder name, tu-<timm model>, or a foundation model (uni...)")
    encoder_weights: str | None = Field(None, description='smp tag such as "imagenet" (needs internet)')
    weights: str | None = Field(None, description="local backbone weights file, or pkg:NAME")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return check_segmenter_arch(v)

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        return check_encoder(v)

    @model_validator(mode="after")
    def _arch_takes_encoder(self) -> SegmenterModel:
        segmenter_arch(self.arch, self.encoder)
        return self


class InferenceSection(Section):
    """How stage 2 segments images larger than train.image_size (the window)."""

    window_stride: float = Field(0.5, gt=0, le=1, description="sliding-window stride, as a share of the window")
    flip: bool = Field(False, description="average with the horizontally flipped prediction")


# Keys of the flat layout (before sections) and where they live now.
_MOVED_COMMON = {
    "image_size": "train.image_size",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "hed_jitter": "augment.hed_jitter",
    "dihedral": "augment.dihedral",
    "weights": "model.weights",
}
MOVED_STAGE1 = {
    **_MOVED_COMMON,
    "backbone": "model.backbone",
    "pretrained": "model.pretrained",
    "output_stride": "model.output_stride",
    "pool": "model.pool",
    "method": "mixing.method",
    "label_mix": "mixing.label_mix",
    "p": "mixing.probability",
    "mix_alpha": "mixing.alpha",
    "patch_min": "ladder.patch_min",
    "patch_levels": "ladder.patch_levels",
    "ratio_floor": "ladder.ratio_floor",
    "ratio_ceiling": "ladder.ratio_ceiling",
    "ratio_steps": "ladder.ratio_steps",
    "fixed_level": "ladder.fixed_level",
    "cell_loss": "loss.patch_cam_weight",
    "signal": "curriculum.signal",
}
MOVED_STAGE2 = {
    **_MOVED_COMMON,
    "arch": "model.arch",
    "encoder": "model.encoder",
    "encoder_weights": "model.encoder_weights",
    "dice": "loss.dice_weight",
    "stride": "inference.window_stride",
    "flip_tta": "inference.flip",
}


def upgrade_flat_config(raw: dict, model: type[RunOptions]) -> dict:
    """A stage config of the flat layout, as written into model files and run folders before the
    sections, in sections; a sectioned config is returned as it is.

    Only for what segmix wrote itself (a model file, a run's ``config.yaml``): configs a person
    writes are refused with the new names instead (:func:`segmix.config.load_config`).
    """
    moved = getattr(model, "moved_keys", {})
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k not in moved}
    for old, new in moved.items():
        if old in raw:
            section, key = new.split(".")
            out.setdefault(section, {})[key] = raw[old]
    return out


def _registered(field: str, value: str, known) -> str:
    if value not in known:
        raise ValueError(f"unknown {field} {value!r}; known: {', '.join(known)}")
    return value


class Stage1Config(RunOptions):
    """Multi-label CAM classifier trained with a batch mixer."""

    moved_keys: ClassVar[dict[str, str]] = MOVED_STAGE1

    model: ClassifierModel = ClassifierModel()
    train: TrainSection = TrainSection()
    stain: StainSection = StainSection()
    augment: AugmentSection = AugmentSection()
    mixing: MixingSection = MixingSection()
    ladder: LadderSection = LadderSection()
    loss: Stage1Loss = Stage1Loss()
    curriculum: CurriculumConfig = CurriculumConfig()
    patch_pool: PoolSection = PoolSection()

    @model_validator(mode="after")
    def _ladder_fits(self) -> Stage1Config:
        if self.train.batch_size < 2:
            raise ValueError("train.batch_size must be at least 2: a batch is mixed within itself")
        levels = self.levels()
        if self.ladder.fixed_level >= len(levels):
            raise ValueError(
                f"ladder.fixed_level {self.ladder.fixed_level}: the ladder has levels 0..{len(levels) - 1}"
            )
        return self

    def levels(self) -> list[Level]:
        """The curricula's ladder for this config's tile size."""
        return self.ladder.levels(self.train.image_size)


class Stage2Config(RunOptions):
    """Segmentation network trained on (pseudo) masks."""

    moved_keys: ClassVar[dict[str, str]] = MOVED_STAGE2

    model: SegmenterModel = SegmenterModel()
    train: TrainSection = TrainSection(batch_size=16)
    stain: StainSection = StainSection()
    augment: AugmentSection = AugmentSection()
    loss: Stage2Loss = Stage2Loss()
    mixing: Stage2Mixing = Stage2Mixing()
    inference: InferenceSection = InferenceSection()

    @model_validator(mode="after")
    def _cells_fit(self) -> Stage2Config:
        if self.mixing.method != "none" and self.mixing.patch_size > self.train.image_size:
            raise ValueError(
                f"mixing.patch_size {self.mixing.patch_size} exceeds train.image_size {self.train.image_size}"
            )
        return self
