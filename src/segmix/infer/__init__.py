"""Inference: tissue maps of new images and whole slides."""

from segmix.infer.predict import (
    SlidePlan,
    SlideResult,
    area_rows,
    is_slide,
    mask_polygons,
    output_paths,
    plan_outputs,
    plan_slide,
    predict_image,
    predict_slide,
    prediction_inputs,
    slide_probabilities,
)
from segmix.infer.slide import SLIDE_SUFFIXES, choose_level, open_slide

__all__ = [
    "SLIDE_SUFFIXES",
    "SlidePlan",
    "SlideResult",
    "area_rows",
    "choose_level",
    "is_slide",
    "output_paths",
    "plan_outputs",
    "plan_slide",
    "prediction_inputs",
    "mask_polygons",
    "open_slide",
    "predict_image",
    "predict_slide",
    "slide_probabilities",
]
