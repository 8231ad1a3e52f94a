"""The synthetic benchmark's options (:class:`SynthConfig`) and difficulty presets, apart from the
generator (:mod:`segmix.data.synth`) so that the command line reads its defaults without loading it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The tissues the generator paints (its textures), in its order.
TISSUES = ("TE", "NEC", "LYM", "TAS")


# Difficulty presets: values of the knobs below; the fields' defaults are the "default" preset.
# "hard" mirrors what real sets (LUAD-HistoSeg, BCSS-WSSS) have and the default lacks: most tiles
# carry 2+ labels (75 % vs 64 %), regions cover large parts of the tile (no small extra regions),
# one class is rare (NEC, ~5 % of tissue pixels), and textures are closer (each region mixes in
# 30 % of another class's texture). Measured by tests/test_synth.py and benchmarks/synth_separability.py.
SYNTH_PRESETS: dict[str, dict] = {
    "default": {},
    "hard": {
        "single_class_prob": 0.1,
        "extra_regions": 0,
        "min_region": 0.1,
        "class_weights": [1.0, 0.13, 1.0, 1.0],
        "texture_blend": 0.3,
    },
}


class SynthConfig(BaseModel):
    """Options of the generator: size and split counts, then what sets its difficulty (stain and
    texture spread, classes per tile, glass, region size, border shape). ``preset`` fills the
    difficulty knobs not given (:data:`SYNTH_PRESETS`)."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field("default", description="difficulty preset: default or hard (sets the knobs not given)")
    tile_size: int = Field(112, ge=32, description="tile side in pixels; 112: the CPU recipes' training size")
    classes: list[str] = Field(list(TISSUES), description="tissue class names; LUAD-HistoSeg's four by default")
    n_train: int = Field(800, ge=1, description="training tiles (image labels; pixel truth kept for scoring)")
    n_val: int = Field(100, ge=0, description="validation tiles with masks (stage-2 model selection, the probe)")
    n_test: int = Field(100, ge=0, description="held-out test tiles with masks (the scores reported)")
    seed: int = Field(0, description="the data's seed; kept apart from the training seeds (held-out data)")
    stain_jitter: float = Field(0.25, ge=0, le=1, description="per-tile spread of stain strength and hue")
    texture_jitter: float = Field(0.25, ge=0, le=1, description="per-tile spread of density / nucleus size")
    single_class_prob: float = Field(0.3, ge=0, le=1, description="share of tiles holding one class only")
    max_classes: int = Field(3, ge=1, description="most classes in one tile")
    glass_prob: float = Field(0.35, ge=0, le=1, description="tiles holding a patch of near-white glass")
    min_region: float = Field(0.04, gt=0, lt=0.5, description="smallest class share of a tile")
    border_warp: float = Field(0.12, ge=0, le=0.5, description="border irregularity, share of tile edge")
    extra_regions: int = Field(
        2, ge=0, description="up to this many more regions of the tile's classes (smaller regions)"
    )
    class_weights: list[float] | None = Field(None, description="relative chance of each class in a tile (null: equal)")
    texture_blend: float = Field(0.0, ge=0, lt=1, description="share of another class's texture mixed into each region")

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: object) -> object:
        if isinstance(data, dict) and "preset" in data:
            if data["preset"] not in SYNTH_PRESETS:
                raise ValueError(f"unknown synth preset {data['preset']!r}; known: {', '.join(SYNTH_PRESETS)}")
            return {**SYNTH_PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _weights_fit(self) -> SynthConfig:
        w = self.class_weights
        if w is not None and (len(w) != len(self.classes) or min(w) <= 0):
            raise ValueError(f"class_weights: one positive weight per class ({len(self.classes)}), got {w}")
        return self

    @field_validator("classes")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in TISSUES]
        if unknown:
            raise ValueError(f"no texture for classes {unknown}; known: {sorted(TISSUES)}")
        if len(set(v)) != len(v) or not v:
            raise ValueError("classes must be distinct and non-empty")
        return v
