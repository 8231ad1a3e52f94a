"""Stage 2's config: the segmentation network, its training on (pseudo) masks, its inference."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from segmix.config.names import check_encoder, check_segmenter_arch, segmenter_arch
from segmix.config.stages import (
    MOVED_COMMON,
    AugmentSection,
    RunOptions,
    StainSection,
    TrainSection,
)
from segmix.errors import ConfigError
from segmix.section import Section

PixelLoss = Literal["ce", "gce"]  # the kinds segmix.train.pixel_loss computes


class Stage2Loss(Section):
    """The per-pixel loss (:mod:`segmix.train.pixel_loss`) and an optional Dice term."""

    pseudo: PixelLoss = Field(
        "ce",
        description="pixel loss on pseudo masks: ce (cross-entropy) or gce (generalized cross-entropy, "
        "robust to wrong pixels); true masks always train with ce",
    )
    q: float = Field(0.7, gt=0, le=1, description="gce's exponent (towards 0: cross-entropy; 1: mean absolute error)")
    dice_weight: float = Field(0.0, ge=0, description="weight of the Dice loss beside the pixel loss")


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


class Stage2SelfTraining(Section):
    """An EMA teacher relabels the training pixels it is sure of (:mod:`segmix.train.self_training`)."""

    start: int | None = Field(None, ge=0, description="epoch from which the teacher relabels (null: off)")
    confidence: float = Field(0.9, gt=0.5, le=1, description="least teacher probability of a relabelled pixel")
    decay: float = Field(0.99, gt=0, lt=1, description="EMA decay of the teacher's weights per step")


def check_classifier_encoder(encoder: str, backbone: str) -> None:
    """Refuse ``start_from: classifier`` unless stage 2's encoder is the classifier's network
    (``tu-<stage 1 backbone>``): the one rule for ``segmix run``'s config and the loader."""
    if encoder != f"tu-{backbone}":
        raise ConfigError(
            f"stage2.model.start_from classifier needs stage2.model.encoder tu-{backbone} (stage 1's backbone), "
            f"not {encoder}"
        )


class SegmenterModel(Section):
    """The stage-2 network (segmentation_models_pytorch)."""

    arch: str = Field("auto", description="smp architecture (DeepLabV3Plus, Unet, FPN, DPT...); auto: DPT for ViTs")
    encoder: str = Field("resnet18", description="smp encoder name, tu-<timm model>, or a foundation model (uni...)")
    encoder_weights: str | None = Field(None, description='smp tag such as "imagenet" (needs internet)')
    weights: str | None = Field(None, description="local backbone weights file, or pkg:NAME")
    start_from: Literal["weights", "classifier"] = Field(
        "weights",
        description="where the encoder starts: weights (encoder_weights / weights) or classifier (stage 1's "
        "backbone, same network: tu-<stage1 backbone>; segmix run, or train-seg --classifier)",
    )

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


MOVED_STAGE2 = {
    **MOVED_COMMON,
    "arch": "model.arch",
    "encoder": "model.encoder",
    "encoder_weights": "model.encoder_weights",
    "dice": "loss.dice_weight",
    "stride": "inference.window_stride",
    "flip_tta": "inference.flip",
}


class Stage2Config(RunOptions):
    """Segmentation network trained on (pseudo) masks."""

    moved_keys: ClassVar[dict[str, str]] = MOVED_STAGE2

    model: SegmenterModel = SegmenterModel()
    train: TrainSection = TrainSection(batch_size=16)
    stain: StainSection = StainSection()
    augment: AugmentSection = AugmentSection()
    loss: Stage2Loss = Stage2Loss()
    mixing: Stage2Mixing = Stage2Mixing()
    self_training: Stage2SelfTraining = Stage2SelfTraining()
    inference: InferenceSection = InferenceSection()

    @model_validator(mode="after")
    def _cells_fit(self) -> Stage2Config:
        if self.mixing.method != "none" and self.mixing.patch_size > self.train.image_size:
            raise ValueError(
                f"mixing.patch_size {self.mixing.patch_size} exceeds train.image_size {self.train.image_size}"
            )
        return self
