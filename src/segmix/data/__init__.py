"""Datasets: the three WSSS histopathology benchmarks, the generic layout, the synthetic generator."""

from segmix.data.dataset import Sample, Split, TileDataset, labels_from_mask, scan_split
from segmix.data.io import read_image, read_mask, write_image, write_mask
from segmix.data.labels import format_label, parse_label
from segmix.data.spec import PRESETS, DatasetSpec, load_spec, resolve_spec
from segmix.errors import DatasetError

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "PRESETS",
    "Sample",
    "Split",
    "TileDataset",
    "format_label",
    "labels_from_mask",
    "load_spec",
    "parse_label",
    "read_image",
    "read_mask",
    "resolve_spec",
    "scan_split",
    "write_image",
    "write_mask",
]
