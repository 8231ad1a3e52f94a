"""The pseudo-mask sections of a run's config: ``cams`` (CAMs of the classifier -> masks) and
``relabel`` (rounds of stage 2 on a segmenter's own label-gated predictions).

Both build masks of the same tiles by the same label-gated rule (:mod:`segmix.pseudo`): the tiles,
how many at once and the glass policy are keys of ``cams`` only (``split``, ``batch_size``, ``white``,
``saturation``, ``num_workers``, ``threads``), and a relabel round reads them from there.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from segmix.config.precision import PrecisionName

# The CamConfig keys a relabel round reads (which tiles, how many at once, glass, workers); the
# others (CAM scales, flip, refinement, precision) have no effect on a segmenter's maps.
MASK_INPUT_KEYS = ("split", "batch_size", "white", "saturation", "num_workers", "threads")


class CamConfig(BaseModel):
    """How CAMs become pseudo masks."""

    model_config = ConfigDict(extra="forbid")
    removed_keys: ClassVar[tuple[str, ...]] = ("uncertain",)  # refused with a note (segmix.errors)
    split: str = Field("train", description="the split whose tiles get pseudo masks (stage 2 trains on them)")
    scales: list[float] = Field([1.0, 1.5], description="tile resize factors; CAMs averaged over them")
    flip: bool = Field(True, description="also average the CAMs of the horizontally flipped tiles")
    batch_size: int = Field(32, ge=1, description="tiles per forward pass")
    labels: str = Field("image", pattern="^(image|predicted)$", description="gate by file-name labels or predictions")
    threshold: float = Field(0.5, gt=0, lt=1, description="for predicted labels")
    white: float = Field(0.80, gt=0, le=1, description="glass: grey above this ...")
    saturation: float = Field(0.15, ge=0, le=1, description="... and saturation below this")
    margin: float | None = Field(
        0.2,
        ge=0,
        le=1,
        description="best CAM leading the second label's by less than this -> 255 (ignored; null: off; "
        "why 0.2: docs/results/defaults.md)",
    )
    refine_steps: int = Field(
        10,
        ge=0,
        le=100,
        description="rounds of colour-adaptive refinement of the CAMs (segmix.pseudo.refine; 0: off; why on: "
        "docs/results/defaults.md)",
    )
    save_cams: bool = Field(False, description="also write float16 CAM arrays (.npy)")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="processes reading tiles, glass and truth (as many threads write PNGs); null: what fits the cores",
    )
    threads: int | None = Field(None, ge=1, description="torch threads; null: the cores the workers leave")
    precision: PrecisionName | None = Field(
        None, description="auto, 32, 16 or bf16; null: the classifier's own precision"
    )


class RelabelConfig(BaseModel):
    """Rounds of stage 2 on the previous round's label-gated predictions (``segmix run``)."""

    model_config = ConfigDict(extra="forbid")
    removed_keys: ClassVar[tuple[str, ...]] = ("margin",)  # refused with a note (segmix.errors)
    rounds: int = Field(
        1,
        ge=0,
        le=5,
        description="rounds of stage 2 retrained on the previous segmenter's label-gated predictions on the "
        "training tiles (0: off; why 1: docs/results/defaults.md)",
    )
    scales: list[Annotated[float, Field(ge=0.25, le=4)]] = Field(
        [0.5, 0.75, 1.0, 1.25, 1.5],
        min_length=1,
        description="the tiles resized by each factor for the segmenter, its probabilities averaged "
        "(multi-scale test-time augmentation of the round's maps, segmix.models.tta; [1.0]: the tiles as they "
        "are; why five: docs/results/defaults.md)",
    )
