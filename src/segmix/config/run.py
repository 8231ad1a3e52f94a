"""The whole-pipeline config of ``segmix run``: one YAML, one section per stage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from segmix.config.precision import PrecisionName
from segmix.config.pseudo import CamConfig, RelabelConfig
from segmix.config.stage1 import Stage1Config
from segmix.config.stage2 import Stage2Config
from segmix.data.synth_config import SynthConfig

OVERLAYS = 8  # overlays of test tiles an evaluation writes (segmix evaluate's default, evaluate.overlays')


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = Field("test", description="the split scored (held out from training and model selection)")
    stride: float | None = Field(None, gt=0, le=1, description="window stride, share of the window; null: the model's")
    flip: bool | None = Field(None, description="test-time horizontal flip; null: the model's")
    overlays: int = Field(OVERLAYS, ge=0, description="test tiles drawn as overlays")
    precision: PrecisionName | None = Field(
        None, description="auto, 32, 16 or bf16; null: the segmenter's own precision"
    )


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gallery: int = Field(6, ge=0, description="train tiles shown as image / truth / CAM / pseudo mask / prediction")
    mixed: int = Field(4, ge=0, description="mixed training images shown with their source maps")


class RunConfig(BaseModel):
    """Everything ``segmix run`` needs.

    ``data`` null means: synthesise the benchmark described by ``synth`` into the run folder.
    ``seed``, when set, overrides the seed of both training stages; the synthetic data keep
    ``synth.seed``, so method seeds vary on one fixed (held-out) data seed.
    """

    model_config = ConfigDict(extra="forbid")
    data: str | None = Field(None, description="dataset root; null: synthesise the benchmark of `synth` into the run")
    preset: str | None = Field(None, description="dataset preset (luad-histoseg, bcss-wsss, wsss4luad); null: detect")
    mpp: float | None = Field(
        None, gt=0, description="microns per pixel of the tiles; overrides dataset.yaml's (stored with the models)"
    )
    seed: int | None = Field(None, description="the seed of both training stages; null: each stage's own")
    synth: SynthConfig = SynthConfig()
    stage1: Stage1Config = Stage1Config()
    cams: CamConfig = CamConfig()
    stage2: Stage2Config = Stage2Config()
    relabel: RelabelConfig = RelabelConfig()
    fully_supervised: bool = Field(True, description="also train stage 2 on train_gt when the dataset has it")
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    def seeded(self) -> RunConfig:
        """The config with the top-level seed pushed into every stage."""
        if self.seed is None:
            return self
        update = {name: getattr(self, name).model_copy(update={"seed": self.seed}) for name in ("stage1", "stage2")}
        return self.model_copy(update=update)
