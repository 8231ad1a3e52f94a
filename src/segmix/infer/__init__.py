"""Inference: tissue maps of new images and whole slides."""

from segmix.infer.predict import (
    SlideResult,
    area_rows,
    is_slide,
    mask_polygons,
    output_paths,
    plan_outputs,
    predict_image,
    predict_slide,
    prediction_inputs,
)
from segmix.infer.slide import SLIDE_SUFFIXES, choose_level, open_slide

__all__ = [
    "SLIDE_SUFFIXES",
    "SlideResult",
    "area_rows",
    "choose_level",
    "is_slide",
    "output_paths",
    "plan_outputs",
    "prediction_inputs",
    "mask_polygons",
    "open_slide",
    "predict_image",
    "predict_slide",
]
