"""The whole pipeline: ``segmix run`` / ``demo`` / ``ablate`` and the HTML report."""

from segmix.config.run import RunConfig
from segmix.pipeline.ablate import run_ablation
from segmix.pipeline.stages import STAGES, run_pipeline

__all__ = ["RunConfig", "STAGES", "run_ablation", "run_pipeline"]
