"""Which output files segmix wrote, and for what request: an output replaces only its own kind.

The outputs of one input in a folder have a record beside them, ``.segmix-<name>.json``: the
input, the request that made them (the input file's identity, model fingerprint, precision,
level, microns per pixel, ...) and the sha256 of each output. Outputs are done when the record
answers the same request and every output it lists is on disk as written (:func:`same_request`).
A file already there may be replaced only when the record lists it for the same input and its
bytes are still those segmix wrote; any other file is the user's, and
:func:`foreign_outputs` names it so the caller refuses before any work. The record is written
before the outputs (sha256 ``pending``) and completed after them (:func:`sealed`), so a run
killed in between still owns what it wrote.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from segmix.data.io import write_text
from segmix.errors import OutputError

PENDING = "pending"


def record_path(folder: Path, name: str) -> Path:
    """The record of the outputs named after ``name`` (an input's stem) in ``folder``."""
    return folder / f".segmix-{name}.json"


def read_record(folder: Path, name: str) -> dict | None:
    """The record, or None when there is none (or it cannot be read: then nothing is owned)."""
    try:
        record = json.loads(record_path(folder, name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("outputs"), dict) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def owned(path: Path, record: dict | None, source: str) -> bool:
    """Whether ``path`` is an output segmix wrote for ``source`` and nobody changed since."""
    if record is None or record.get("input") != source:
        return False
    sha = record["outputs"].get(path.name)
    return sha == PENDING or (sha is not None and path.is_file() and file_sha256(path) == sha)


def foreign_outputs(targets: list[Path], name: str, source: str) -> list[Path]:
    """The ``targets`` (files in one folder) that exist and are not segmix's outputs for ``source``."""
    existing = [t for t in targets if t.exists()]
    if not existing:
        return []
    record = read_record(existing[0].parent, name)
    return [t for t in existing if not t.is_file() or not owned(t, record, source)]


def refuse_foreign(targets: list[Path], name: str, source: str) -> None:
    """Raise when an output would replace a file segmix did not write for ``source``.

    Raises:
        OutputError: naming the first such file.
    """
    foreign = foreign_outputs(targets, name, source)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(
            f"{foreign[0]}{more}: exists and is not an output segmix wrote for {source}; "
            "move it away or choose another --out folder"
        )


@contextmanager
def sealed(targets: list[Path], name: str, source: str, request: dict):
    """Write the outputs ``targets`` inside the block; the record claims them before and holds
    their sha256 after (those that exist; a target not written is dropped from the record)."""
    folder = targets[0].parent
    base = {"input": source, "request": request}
    write_text(
        record_path(folder, name), json.dumps({**base, "outputs": dict.fromkeys((t.name for t in targets), PENDING)})
    )
    try:
        yield
    finally:
        done = {t.name: file_sha256(t) for t in targets if t.is_file()}
        write_text(record_path(folder, name), json.dumps({**base, "outputs": done}, indent=1))


def input_identity(path: Path) -> dict:
    """What tells a file from another of the same name: its size and modification time (a slide
    replaced by another, or rewritten, is predicted again)."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def same_request(folder: Path, name: str, source: str, request: dict, done: Path) -> bool:
    """Whether the outputs on disk are segmix's finished answer to ``request``: the record's
    request is the same, ``done`` (the file written last) is among its outputs, and every
    output it lists is there with the bytes segmix wrote."""
    record = read_record(folder, name)
    if record is None or record.get("request") != json.loads(json.dumps(request)):
        return False
    outputs = record["outputs"]
    return done.name in outputs and all(
        Path(out).name == out and sha != PENDING and owned(folder / out, record, source)  # names only: no other folder
        for out, sha in outputs.items()
    )
