"""Corrupted image bytes through the readers and ``info --check``: each file either decodes or
gives the one-line :class:`DatasetError` naming it; never another exception, never a hang."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segmix.data.io import read_image, read_mask
from segmix.data.spec import PRESETS
from segmix.data.summary import summarize
from segmix.errors import DatasetError

rng = np.random.default_rng(0)
_PIXELS = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_PIXELS).save(buf, format=fmt)
    return buf.getvalue()


VALID = {".png": _encoded("PNG"), ".jpg": _encoded("JPEG"), ".tif": _encoded("TIFF"), ".bmp": _encoded("BMP")}
HEADERS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF89a", b""]


@st.composite
def corrupted(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[suffix])
    kind = draw(st.sampled_from(["truncate", "flip", "header", "splice"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "header":
        head = draw(st.sampled_from(HEADERS))
        data = bytearray(head) + data[len(head) :]
    else:
        data = data[: len(data) // 2] + bytearray(draw(st.binary(max_size=64)))
    return suffix, bytes(data)


def _check_one(path: Path) -> None:
    for read in (read_image, lambda p: read_mask(p, 256)):
        try:
            read(path)
        except DatasetError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=corrupted())
def test_readers_decode_or_name_the_file(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"tile{suffix}"
    path.write_bytes(data)
    _check_one(path)


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(corrupted(), min_size=1, max_size=4))
def test_info_check_lists_every_corrupt_file(tmp_path, cases):
    root = tmp_path / "ds"
    shutil.rmtree(root, ignore_errors=True)
    spec = PRESETS["luad-histoseg"]
    for i, (suffix, data) in enumerate(cases):
        path = root / "train" / f"t{i}-[1 0 0 1]{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    splits = summarize(root, spec, check=True)
    problems = [p for s in splits for p in s.problems]
    assert all("\n" not in p for p in problems)
    for path in sorted((root / "train").iterdir()):
        try:
            read_image(path)
            readable = True
        except DatasetError:
            readable = False
        # listed exactly when it cannot be read: one pass reports every bad file, no good one
        assert readable != any(p.startswith(f"{path}:") for p in problems), (path, problems)
