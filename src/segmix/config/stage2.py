"""Stage 2's config: the segmentation network, its training on (pseudo) masks, its inference."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from segmix.config.names import check_encoder, check_segmenter_arch, segmenter_arch
from segmix.config.stages import (
    MOVED_COMMON,
    AugmentSection,
    RunOptions,
    StainSection,
    TrainSection,
)
from segmix.section import Section

# Keys of earlier versions for experiments that lost where they were measured (docs/results,
# CHANGELOG.md): dropped from the configs segmix wrote itself (model files, run folders), refused
# with this note in a config a person writes.
REMOVED_STAGE2 = ("loss", "mixing", "self_training")
REMOVED_MODEL = ("start_from",)


class SegmenterModel(Section):
    """The stage-2 network (segmentation_models_pytorch)."""

    arch: str = Field("auto", description="smp architecture (DeepLabV3Plus, Unet, FPN, DPT...); auto: DPT for ViTs")
    encoder: str = Field("resnet18", description="smp encoder name, tu-<timm model>, or a foundation model (uni...)")
    encoder_weights: str | None = Field(None, description='smp tag such as "imagenet" (needs internet)')
    weights: str | None = Field(None, description="local backbone weights file, or pkg:NAME")
    removed_keys: ClassVar[tuple[str, ...]] = REMOVED_MODEL

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
    "stride": "inference.window_stride",
    "flip_tta": "inference.flip",
}


class Stage2Config(RunOptions):
    """Segmentation network trained on (pseudo) masks."""

    moved_keys: ClassVar[dict[str, str]] = MOVED_STAGE2
    removed_keys: ClassVar[tuple[str, ...]] = REMOVED_STAGE2

    model: SegmenterModel = SegmenterModel()
    train: TrainSection = TrainSection(batch_size=16)
    stain: StainSection = StainSection()
    augment: AugmentSection = AugmentSection()
    inference: InferenceSection = InferenceSection()

    @classmethod
    def upgrade_sections(cls, raw: dict) -> dict:
        """A config segmix wrote before without the keys of removed experiments (their defaults
        then: what a model file of that time was trained with, unless its run set them)."""
        out = {k: v for k, v in raw.items() if k not in REMOVED_STAGE2}
        if isinstance(out.get("model"), dict):
            out["model"] = {k: v for k, v in out["model"].items() if k not in REMOVED_MODEL}
        return out
