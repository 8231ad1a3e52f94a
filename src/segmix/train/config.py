"""Stage-1 (classifier) configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from segmix.models.names import check_backbone, check_encoder, check_segmenter_arch
from segmix.shuffle import LABEL_MIXERS, METHODS


class CurriculumConfig(BaseModel):
    """Constants of the feedback rule (see :mod:`segmix.shuffle.curriculum`)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["loss", "score"] = "loss"
    advance: float = Field(0.05, ge=0, lt=1)
    tighten: float = Field(0.05, ge=0)
    backoff: float = Field(0.10, ge=0)
    warmup: int = Field(1, ge=0)
    warmup_off: bool = True


class RunOptions(BaseModel):
    """How a training stage runs: seed, devices, precision (the same keys in both stages)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="fixes data order, mixing, augmentation and initialisation")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    precision: str = Field("auto", description="bf16 autocast on CPU / capable GPUs, fp16 AMP on older GPUs")
    accelerator: str = "auto"
    devices: int | str = Field("auto", description="GPUs (or CPU processes) per node")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="\"ddp\" for several GPUs / nodes")


class Stage1Config(RunOptions):
    """Multi-label CAM classifier trained with a batch mixer."""

    # model
    backbone: str = Field("resnet18", description="timm model name (or hf-hub:ORG/NAME)")
    pretrained: bool = Field(False, description="timm's pretrained weights (downloads; offline: use weights)")
    weights: str | None = Field(None, description="local backbone weights file")
    output_stride: int | None = Field(16, description="backbone stride: CAMs are image_size / output_stride wide")
    pool: str = Field("avg", description="CAM pooling to image logits: avg, max or lse")
    # data
    image_size: int = Field(112, ge=16, description="training tiles are resized to this square")
    batch_size: int = Field(32, ge=2)
    hed_jitter: float = Field(0.05, ge=0, le=0.5)
    dihedral: bool = True
    # optimisation
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # mixing
    method: str = Field("segmix", description="mixing: none, cutmix, mixup, shuffle-fixed, shuffle-scheduled, segmix")
    label_mix: str = Field("union", description="measured: +1.8 pseudo-mask mIoU over \"area\" (benchmarks/results)")
    p: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    patch_min: int = Field(14, ge=1, description="finest patch edge of the curriculum's ladder, pixels")
    patch_levels: int = Field(3, ge=1, description="patch sizes on the ladder, coarse to fine")
    ratio_floor: float = Field(0.25, ge=0, le=1, description="share of grid positions swapped at the easiest level")
    ratio_ceiling: float = Field(0.5, ge=0, le=1, description="share swapped at the hardest level")
    ratio_steps: int = Field(2, ge=1, description="ratios per patch size")
    fixed_level: int = Field(0, ge=0, description="rung used by shuffle-fixed")
    mix_alpha: float = Field(1.0, gt=0, description="CutMix / MixUp Beta parameter")
    cell_loss: float = Field(1.0, ge=0, description="weight of the per-patch CAM loss on grid mixers")
    signal: Literal["train_loss", "val_loss", "val_f1"] = Field("train_loss", description="the feedback curriculum's signal")
    curriculum: CurriculumConfig = CurriculumConfig()

    @field_validator("method", "label_mix")
    @classmethod
    def _registered(cls, v: str, info: ValidationInfo) -> str:
        known = {"method": METHODS, "label_mix": LABEL_MIXERS}[info.field_name]
        if v not in known:
            raise ValueError(f"unknown {info.field_name} {v!r}; known: {', '.join(known)}")
        return v

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        return check_backbone(v)


class Stage2Config(RunOptions):
    """Segmentation network trained on (pseudo) masks."""

    arch: str = Field("DeepLabV3Plus", description="smp architecture: DeepLabV3Plus, Unet, FPN, Segformer, DPT...")
    encoder: str = Field("resnet18", description="smp encoder name, or tu-<timm model>")
    encoder_weights: str | None = Field(None, description="smp tag such as \"imagenet\" (needs internet)")
    weights: str | None = Field(None, description="local backbone weights file")
    image_size: int = Field(112, ge=16, description="training tiles (and masks) are resized to this square")
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    dice: float = Field(0.0, ge=0, description="weight of the Dice loss beside cross-entropy")
    hed_jitter: float = Field(0.05, ge=0, le=0.5)
    dihedral: bool = True
    stride: float = Field(0.5, gt=0, le=1, description="sliding-window stride, share of the window")
    flip_tta: bool = False

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return check_segmenter_arch(v)

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        return check_encoder(v)
