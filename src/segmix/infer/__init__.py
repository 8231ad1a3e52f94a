"""Inference: tissue maps of new images and whole slides (``segmix predict``)."""

from segmix.infer.cohort import plan_cohort, predict_cohort
from segmix.infer.inputs import is_slide, output_name, output_paths, plan_outputs, prediction_inputs
from segmix.infer.predict import check_resolution, predict_image, predict_slide
from segmix.infer.slide import choose_level, open_slide

__all__ = [
    "check_resolution",
    "choose_level",
    "is_slide",
    "open_slide",
    "output_name",
    "output_paths",
    "plan_cohort",
    "plan_outputs",
    "predict_cohort",
    "predict_image",
    "predict_slide",
    "prediction_inputs",
]
