"""Pyramidal tiled TIFF maps written while they are computed: a class map or per-class
probabilities at the resolution a slide was read at, for OpenSlide and tifffile.

Rows arrive in bands of any height (:meth:`PyramidWriter.write`); a thread cuts them into
256-px tiles that tifffile compresses (deflate) into page 0, so memory holds one band of tile
rows, never the map. Each further page halves the one before (nearest pixel: a class stays a
class) until the map fits one tile: the plain pyramidal TIFF that OpenSlide reads as levels
("generic tiled TIFF"). The lower levels are cut from the same bands as they pass (every second
row and column) and their tiles compressed into temp files beside the map, so that closing only
copies them in: level 0 is never read back. The resolution is in the TIFF's tags (pixels per
centimetre), what the values mean (classes, palette) in its description, as JSON; a class map carries its palette as
the TIFF colour map, so viewers show it in the classes' colours.

Examples:
    >>> import tempfile, tifffile
    >>> path = Path(tempfile.mkdtemp()) / "map.tif"
    >>> with PyramidWriter(path, 600, 700, mpp=0.5, description={"classes": ["a"]}) as w:
    ...     for y in range(0, 600, 100):
    ...         w.write(np.full((100, 700), y // 100, np.uint8))
    >>> [p.shape for p in tifffile.TiffFile(path).pages]
    [(600, 700), (300, 350), (150, 175)]
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segmix.data.io import FILE_MODE

TILE = 256
_END = object()


class PyramidWriter:
    """A (height, width) or (height, width, samples) uint8 map written row band by row band into
    a pyramidal TIFF at ``path``; :meth:`close` (or leaving the ``with`` block) adds the lower
    levels and renames the file into place (a temp file in the same folder until then, removed
    when the block is left on an error).

    Args:
        mpp: microns per pixel of level 0, written as the resolution tags.
        description: what the values mean, stored as JSON in the ImageDescription tag.
        palette: uint8 (n, 3) colours of the values 0..n-1 (a class map), written as the colour map.
    """

    def __init__(
        self,
        path: Path,
        height: int,
        width: int,
        samples: int = 1,
        mpp: float | None = None,
        description: dict | None = None,
        palette: np.ndarray | None = None,
    ) -> None:
        self.path, self.shape = Path(path), (height, width) if samples == 1 else (height, width, samples)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tif", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._tags = _tags(mpp, description, palette, samples)
        self._lower = _LowerLevel.chain(self._tmp, self.shape)  # the pages below level 0, each fed by the one above
        self._bands_in = _TileBands(height)
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_level0, daemon=True)
        self._thread.start()

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (h, width[, samples]) uint8 below those written before."""
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape} for a map of shape {self.shape}")
        for band in self._bands_in.add(rows):
            self._put(band)

    def close(self) -> None:
        """Finish level 0 and write the lower levels."""
        if self._bands_in.received != self.shape[0]:
            raise ValueError(f"{self._bands_in.received} rows written for a map of {self.shape[0]}")
        self._put(_END)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            _append_levels(self._tmp, self._lower, self._tags)
            os.chmod(self._tmp, FILE_MODE)  # mkstemp's files are 0600
            os.replace(self._tmp, self.path)
        finally:
            self._remove_temp_files()

    def abort(self) -> None:
        """Stop the writer thread (its file is incomplete)."""
        self._put(_END, check=False)  # tifffile then lacks tiles and stops with an error, swallowed
        self._thread.join()
        self._remove_temp_files()

    def _remove_temp_files(self) -> None:
        self._tmp.unlink(missing_ok=True)
        for level in self._lower:
            level.remove()

    def __enter__(self) -> PyramidWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _put(self, item, check: bool = True) -> None:
        # Bounded: the writer thread compresses at most two bands behind; if it died, say why
        # (``check``), or give up quietly once it has ended (``abort``).
        while self._thread.is_alive():
            if check and self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        if check and self._error is not None:
            raise self._error

    def _bands(self) -> Iterator[np.ndarray]:
        while (band := self._queue.get()) is not _END:
            if self._lower:
                self._lower[0].add(band[::2, ::2])  # bands start at even rows: rows 0, 2, ... of the map
            yield band

    def _write_level0(self) -> None:
        import tifffile

        try:
            with tifffile.TiffWriter(self._tmp, bigtiff=True) as tif:
                tif.write(_tiles(self._bands()), shape=self.shape, dtype=np.uint8, **self._tags)
        except BaseException as err:  # raised in the caller's thread by write/close
            self._error = err


def _tiles(bands: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """TILE x TILE tiles, row by row, of bands of TILE rows (the last may be shorter); edges padded with 0."""
    for band in bands:
        for x in range(0, band.shape[1], TILE):
            part = band[:, x : x + TILE]
            if part.shape[:2] == (TILE, TILE):
                yield np.ascontiguousarray(part)
            else:
                tile = np.zeros((TILE, TILE, *part.shape[2:]), np.uint8)
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile


class _TileBands:
    """Rows of a page of ``height`` rows, arriving in bands of any height, regrouped into bands of
    TILE rows (the last one shorter): what a tiled page is cut from."""

    def __init__(self, height: int) -> None:
        self.height, self.emitted, self._rows, self._buffered = height, 0, [], 0

    @property
    def received(self) -> int:
        return self.emitted + self._buffered

    def add(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """The bands that ``rows`` completes, top first."""
        self._rows.append(rows)
        self._buffered += len(rows)
        while self._buffered >= TILE or (self._buffered and self.received >= self.height):
            band = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
            take = min(TILE, len(band))
            self.emitted += take
            self._rows, self._buffered = ([band[take:]] if take < len(band) else []), len(band) - take
            yield band[:take]


def _tags(mpp: float | None, description: dict | None, palette: np.ndarray | None, samples: int) -> dict:
    """tifffile's ``write`` arguments shared by every level."""
    tags: dict = {"tile": (TILE, TILE), "compression": "zlib", "metadata": None}
    if mpp:
        tags |= {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    if description is not None:
        tags["description"] = json.dumps(description)
    if palette is not None and samples == 1:
        colormap = np.zeros((3, 256), np.uint16)
        colormap[:, : len(palette)] = np.asarray(palette, np.uint16).T * 257
        tags |= {"photometric": "palette", "colormap": colormap}
    else:
        tags |= {"photometric": "minisblack", "planarconfig": "contig"}
    return tags


class _LowerLevel:
    """One page below level 0: rows (every second row and column of the page above) cut into
    tiles as they come, compressed as tifffile compresses them (deflate) into a temp file."""

    def __init__(self, tmp: Path, index: int, shape: tuple, below: _LowerLevel | None) -> None:
        self.shape, self.below, self.sizes = shape, below, []
        self.path = tmp.with_name(f"{tmp.name}.level{index}")
        self._file = self.path.open("wb")
        self._bands_in = _TileBands(shape[0])

    @classmethod
    def chain(cls, tmp: Path, shape: tuple) -> list[_LowerLevel]:
        """The levels below a page of ``shape``, halving until one fits a tile, top first."""
        shapes = []
        while max(shape[:2]) > TILE:
            shape = ((shape[0] + 1) // 2, (shape[1] + 1) // 2, *shape[2:])
            shapes.append(shape)
        levels: list[_LowerLevel] = []
        for i, lower in reversed(list(enumerate(shapes, start=1))):
            levels.insert(0, cls(tmp, i, lower, levels[0] if levels else None))
        return levels

    def add(self, rows: np.ndarray) -> None:
        import imagecodecs

        for band in self._bands_in.add(rows):
            for tile in _tiles([band]):
                data = imagecodecs.zlib_encode(tile)
                self._file.write(data)
                self.sizes.append(len(data))
            if self.below is not None:
                self.below.add(band[::2, ::2])
        if self._bands_in.emitted == self.shape[0]:
            self._file.close()

    def finish(self) -> None:
        """Check that every row came (ValueError otherwise)."""
        if self._bands_in.emitted != self.shape[0]:
            raise ValueError(f"a level of {self.shape[0]} rows got {self._bands_in.emitted}")

    def tiles(self) -> Iterator[bytes]:
        """The compressed tiles, in order."""
        with self.path.open("rb") as fh:
            for size in self.sizes:
                yield fh.read(size)

    def remove(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _append_levels(path: Path, levels: list[_LowerLevel], tags: dict) -> None:
    """Append the lower levels' pages, their tiles copied as they were compressed."""
    import tifffile

    lower = {k: v for k, v in tags.items() if k != "description"}
    with tifffile.TiffWriter(path, bigtiff=True, append=True) as out:
        for level in levels:
            level.finish()
            out.write(level.tiles(), shape=level.shape, dtype=np.uint8, subfiletype=1, **lower)
