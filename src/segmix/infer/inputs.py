"""What ``segmix predict`` reads and writes: its inputs (images, slides, slide lists) and the
names of its outputs, checked before any work.

Outputs are named ``<input's output name><suffix>`` in one folder (:func:`output_name`,
:data:`IMAGE_OUTPUTS`, :data:`SLIDE_OUTPUTS`). :func:`plan_outputs` refuses, before any work, a
set of inputs where a name would be too long for the file system, an output would replace an
input file (``--out`` being the input folder) or two inputs would write the same output (same
name in two folders), or where a file already there is not segmix's output for that input
(:mod:`segmix.infer.records`): nothing the user has is ever overwritten.
"""

from __future__ import annotations

from pathlib import Path

from segmix.data.io import IMAGE_SUFFIXES
from segmix.errors import DatasetError, OutputError
from segmix.infer.records import refuse_foreign
from segmix.infer.slide import SLIDE_SUFFIXES

IMAGE_OUTPUTS = {"mask": "_mask.png", "overlay": "_overlay.png", "areas": "_areas.csv"}
SLIDE_OUTPUTS = {
    "classmap_tiff": "_classmap.tif",
    "probs": "_probs.tif",  # with --probs only
    "classmap": "_classmap.png",
    "overlay": "_overlay.png",
    "areas": "_areas.csv",
    "geojson": ".geojson",
    "summary": "_summary.json",
}


COHORT_TABLE = "cohort.csv"  # the table of every slide predicted into a folder
# Stems that would name the folder itself or the one above it (a slide's outputs go into
# ``out/<name>``), or the cohort table and its record.
_RESERVED_NAMES = {"", ".", "..", COHORT_TABLE}


def output_name(path: Path) -> str:
    """What an input's outputs, its slide folder and its record are named after: its stem, with a
    leading ``_`` where the stem alone would lead out of the output folder or onto the cohort table.

    >>> output_name(Path("in/tile.png")), output_name(Path("...tif")), output_name(Path("cohort.csv.tif"))
    ('tile', '_..', '_cohort.csv')
    """
    stem = path.stem
    return f"_{stem}" if stem in _RESERVED_NAMES else stem


def is_slide(path: Path) -> bool:
    return path.suffix.lower() in SLIDE_SUFFIXES


def read_slide_list(path: str | Path) -> list[Path]:
    """Slides named in a text file, one per line (relative to the file's folder; ``#`` comments).

    Listed slides are not read here: one that is missing fails alone, as an unreadable one.

    Raises:
        DatasetError: the list cannot be read, or a line names a folder.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read the slide list ({err})") from err
    slides = []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        slide = path.parent / name  # an absolute name stays absolute
        if name and slide.is_dir():
            raise DatasetError(path, f"line {number} names the folder {slide}; list slide files, or give the folder")
        slides += [slide] if name else []
    return slides


def prediction_inputs(inputs: list[Path]) -> list[Path]:
    """The files to predict: files as given, folders' images and slides (not recursive), the
    slides of ``.txt`` lists (:func:`read_slide_list`), each file once.

    Raises:
        DatasetError: an input that does not exist, or nothing to predict.
    """
    files: dict[Path, Path] = {}
    for item in inputs:
        if item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES | SLIDE_SUFFIXES
            )
        elif item.is_file() and item.suffix.lower() == ".txt":
            found = read_slide_list(item)
        elif item.is_file():
            found = [item]
        else:
            raise DatasetError(item, "input does not exist")
        for f in found:
            files.setdefault(f.resolve(), f)
    if not files:
        raise DatasetError(inputs[0], "no images or slides to predict")
    return list(files.values())


# Most file systems allow 255 bytes per name; the longest a prediction writes is its record's,
# ``.segmix-<name>.json`` (13 more bytes than the name, as ``<name>_classmap.png``).
MAX_NAME_BYTES = 255 - len(".segmix-.json")


def _check_name_length(path: Path) -> None:
    """Refuse an input whose output names would be too long for the file system.

    Raises:
        OutputError: naming the input and the bytes.
    """
    size = len(output_name(path).encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise OutputError(
            f"{path}: its name is {size} bytes, too long for its outputs' names (at most {MAX_NAME_BYTES}); rename it"
        )


def output_paths(path: Path, out: Path) -> dict[str, Path]:
    """The files :func:`~segmix.infer.predict.predict_image` / ``predict_slide`` write into ``out``
    for the input ``path``, by role (:data:`IMAGE_OUTPUTS`, :data:`SLIDE_OUTPUTS`; ``segmix
    predict`` gives each slide its own folder, ``out/<slide stem>``).

    Examples:
        >>> from pathlib import Path
        >>> output_paths(Path("in/tile.png"), Path("out"))["areas"].as_posix()
        'out/tile_areas.csv'
        >>> list(output_paths(Path("s.svs"), Path("out/s")))
        ['classmap_tiff', 'probs', 'classmap', 'overlay', 'areas', 'geojson', 'summary']
    """
    names = SLIDE_OUTPUTS if is_slide(path) else IMAGE_OUTPUTS
    return {role: out / f"{output_name(path)}{suffix}" for role, suffix in names.items()}


def output_folder(path: Path, out: Path) -> Path:
    """Where the outputs of the input ``path`` go: ``out`` for an image, ``out/<output name>`` for
    a slide (``segmix predict`` gives each slide its own folder)."""
    return out / output_name(path) if is_slide(path) else out


def plan_outputs(files: list[Path], out: Path) -> None:
    """Refuse inputs whose outputs would replace an input, each other, or an image's outputs a
    file that segmix did not write for that image (:mod:`segmix.infer.records`; a slide's are
    checked by :func:`~segmix.infer.cohort.plan_cohort`).

    Raises:
        OutputError: naming the output and the inputs involved.
    """
    inputs = {f.resolve(): f for f in files}
    writer: dict[Path, Path] = {}
    for f in files:
        _check_name_length(f)
        for target in output_paths(f, output_folder(f, out)).values():
            key = target.resolve()
            if key in inputs:
                raise OutputError(
                    f"{target}: the prediction of {f} would replace the input {inputs[key]}; "
                    "write to another --out folder"
                )
            if key in writer:
                raise OutputError(
                    f"{target}: {writer[key]} and {f} would both write it (same name); "
                    "predict them into separate --out folders"
                )
            writer[key] = f
        if not is_slide(f):
            refuse_foreign(list(output_paths(f, out).values()), output_name(f), str(f.resolve()))
