"""Image-level labels written in file names: ``<id>-[1 0 0 1].png``, ``[1001]``, ``[1, 0, 0, 1]``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from segmix.errors import DatasetError

_BRACKET = re.compile(r"\[([^\[\]]*)\]$")
_SEPARATED = re.compile(r"^[01](?:\s*,\s*|\s+)(?:[01](?:\s*,\s*|\s+))*[01]$|^[01]$")
_COMPACT = re.compile(r"^[01]+$")


def parse_label(name: str | Path, num_classes: int) -> np.ndarray:
    """Multi-hot label from a file name.

    Args:
        name: file name or path; the label is the last ``[...]`` before the extension.
        num_classes: expected label length K.

    Returns:
        uint8 array of shape (K,) holding 0/1.

    Raises:
        DatasetError: naming the file when the bracket is missing, malformed, of the wrong
            length, or marks no class at all.

    Examples:
        >>> parse_label("train/tile_3-[1 0 0 1].png", 4).tolist()
        [1, 0, 0, 1]
        >>> parse_label("tile-[0101].png", 4).tolist()
        [0, 1, 0, 1]
    """
    path = Path(name)
    match = _BRACKET.search(path.stem)
    if match is None:
        raise DatasetError(path, "no image-level label '[...]' at the end of the file name")
    inside = match.group(1).strip()
    if _COMPACT.match(inside):
        digits = list(inside)
    elif _SEPARATED.match(inside):
        digits = re.split(r"\s*,\s*|\s+", inside)
    else:
        raise DatasetError(path, f"malformed label '[{match.group(1)}]': expected 0/1 digits")
    if len(digits) != num_classes:
        raise DatasetError(
            path, f"label '[{match.group(1)}]' has {len(digits)} entries, dataset has {num_classes} classes"
        )
    label = np.array([int(d) for d in digits], dtype=np.uint8)
    if not label.any():
        raise DatasetError(path, f"label '[{match.group(1)}]' marks no class")
    return label


def format_label(label: np.ndarray, style: str = "space") -> str:
    """``[1 0 0 1]`` (space), ``[1001]`` (compact) or ``[1, 0, 0, 1]`` (comma).

    Examples:
        >>> import numpy as np
        >>> format_label(np.array([1, 0, 0, 1])), format_label(np.array([1, 0]), "compact")
        ('[1 0 0 1]', '[10]')
    """
    sep = {"space": " ", "compact": "", "comma": ", "}[style]
    return "[" + sep.join(str(int(v)) for v in label) + "]"
