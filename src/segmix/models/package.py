"""Model packages: a folder that holds one trained model without its run, loadable without unpickling.

``model.safetensors`` (the weights, tensors only) and ``config.json`` (what rebuilds and feeds the
model: architecture, encoder, classes and palette, mask indices, input size, normalisation, stain
normaliser, training microns per pixel, the stage config and dataset description, the segmix
version that wrote it). ``segmix export`` writes the segmenter's package with a model card
(``README.md``) and the classifier's in ``classifier/`` beside it. :func:`read_package` returns the
same payload a ``.pt`` model file holds, so :func:`segmix.models.load_segmenter` and
:func:`~segmix.models.load_classifier` take either.

>>> import tempfile, torch
>>> from segmix.config import Stage2Config
>>> from segmix.data.spec import PRESETS
>>> payload = {"state_dict": {"w": torch.ones(2)}, "config": Stage2Config().model_dump(mode="json"),
...            "spec": PRESETS["luad-histoseg"].model_dump(mode="json"), "stain": None}
>>> folder = tempfile.mkdtemp()
>>> write_package(payload, "segmenter", folder)
>>> read_package(folder, "segmenter")["spec"]["classes"]
['TE', 'NEC', 'LYM', 'TAS']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segmix.config import Stage1Config, Stage2Config
from segmix.config.names import segmenter_arch
from segmix.config.stages import MAX_IMAGE_SIZE, upgrade_flat_config
from segmix.data.io import write_atomic, write_text
from segmix.data.spec import DatasetSpec
from segmix.data.stain import StainNormalizer
from segmix.errors import ModelFileError, first_line
from segmix.models.weights import load_trusted_tensors

FORMAT, FORMAT_VERSION = "segmix-model", 1
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
KINDS = ("segmenter", "classifier")
STAGE_CONFIGS = {"segmenter": Stage2Config, "classifier": Stage1Config}
Byte = Annotated[int, Field(ge=0, le=255)]
Colour = tuple[Byte, Byte, Byte]


class PackageDocument(BaseModel):
    """``config.json``: every key with its type and bounds, checked whole before any tensor is read.

    ``classes``, ``palette`` and ``mpp`` are what the package says (a colleague may rename the
    classes or correct the resolution there: the dataset description follows them); the other
    descriptive keys (``architecture``, ``encoder``, ``mask_indices``, ``input_size``,
    ``normalization``) follow from ``config`` and ``spec`` and must agree with them.
    """

    model_config = ConfigDict(extra="forbid")
    format: Literal["segmix-model"]
    format_version: int = Field(ge=1)
    segmix: str
    kind: Literal["segmenter", "classifier"]
    architecture: str
    encoder: str | None
    classes: list[str] = Field(min_length=1, max_length=254)
    palette: list[Colour] | None
    mask_indices: list[str] | None
    input_size: int = Field(ge=16, le=MAX_IMAGE_SIZE)
    normalization: dict
    stain: dict | None
    mpp: float | None = Field(gt=0)
    config: dict
    spec: dict | None


# The keys config.json holds; another key means a format this segmix does not know.
CONFIG_KEYS = frozenset(PackageDocument.model_fields)


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a package's ``config.json``."""
    return (Path(path) / CONFIG_FILE).is_file()


def package_config(payload: dict, kind: str) -> dict:
    """``config.json`` of a model file's payload (see :func:`segmix.models.io.save_segmenter`)."""
    from segmix import __version__

    cfg, spec = payload["config"], payload.get("spec")
    model = cfg["model"]
    classes = spec["classes"] if spec else payload["classes"]
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "segmix": __version__,
        "kind": kind,
        "architecture": segmenter_arch(model["arch"], model["encoder"]) if kind == "segmenter" else "CamClassifier",
        "encoder": model.get("encoder", model.get("backbone")),
        "classes": classes,
        "palette": spec["palette"] if spec else None,
        "mask_indices": (classes + ["background"] * (spec["background_index"] + 1 - len(classes))) if spec else None,
        "input_size": cfg["train"]["image_size"],
        "normalization": _normalization(kind, model),
        "stain": payload.get("stain"),
        "mpp": spec.get("mpp") if spec else payload.get("mpp"),
        "config": cfg,
        "spec": spec,
    }
    return doc


def _normalization(kind: str, model: dict) -> dict:
    """How pixels become the model's input: RGB / 255, then (x - mean) / std per channel."""
    if kind == "segmenter":  # segmix.models.segmenter_input
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return {"scale": "RGB / 255", "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD)}
    return {"scale": "RGB / 255", "mean_std": f"the backbone's own (timm data config of {model['backbone']})"}


def write_package(payload: dict, kind: str, folder: str | Path) -> None:
    """Write ``payload`` (a model file's content) as a package into ``folder``, each file atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    # Own, contiguous copies: safetensors refuses tensors that share memory.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in payload["state_dict"].items()}
    write_atomic(folder / WEIGHTS_FILE, lambda fh: fh.write(save(tensors)))
    write_text(folder / CONFIG_FILE, json.dumps(package_config(payload, kind), indent=2))


def read_package(folder: str | Path, kind: str) -> dict:
    """The payload of the package in ``folder`` (``state_dict``, ``config``, ``spec`` or
    ``classes``, ``stain``, ``mpp``); the weights are read by safetensors, never unpickled, after
    the whole ``config.json`` is validated (:class:`PackageDocument`, the stage config, the
    dataset description, the stain normaliser).

    Raises:
        ModelFileError: not a package of ``kind``, written by a newer segmix, or a key of
            ``config.json`` unknown, of the wrong type, out of bounds or contradicting another,
            named with the package.
    """
    folder = Path(folder)
    doc = _read_config(folder)
    if doc.get("format") != FORMAT or doc.get("kind") != kind:
        raise ModelFileError(f"{folder}: not a segmix {kind} package (config.json says {doc.get('kind')!r})")
    _check_version(folder, doc)
    payload = checked_payload(folder / CONFIG_FILE, doc, kind)
    payload["state_dict"] = load_trusted_tensors(folder / WEIGHTS_FILE, f"segmix {kind} weights")
    return payload


def checked_payload(path: Path, doc: dict, kind: str) -> dict:
    """The payload (without weights) that ``doc``, a package's ``config.json``, describes.

    Raises:
        ModelFileError: ``path: key: problem`` for the first keys that do not validate.
    """
    try:
        checked = PackageDocument.model_validate(doc)
    except ValidationError as err:
        raise ModelFileError(f"{path}: {first_line(err)}") from None
    stage = STAGE_CONFIGS[kind]
    config = _validated(path, "config", stage, upgrade_flat_config(checked.config, stage)).model_dump(mode="json")
    payload = {"config": config, "stain": checked.stain, "mpp": checked.mpp}
    try:
        StainNormalizer.from_dict(checked.stain)
    except ValueError as err:
        raise ModelFileError(f"{path}: {first_line(err)}") from None
    if kind == "segmenter":
        payload["spec"] = _spec(path, checked)
    else:
        payload["classes"] = checked.classes
    derived = package_config(payload, kind)
    # mask_indices name the classes: as exported, or as renamed in ``classes``.
    exported = derived
    if kind == "segmenter":
        exported = package_config({**payload, "spec": {**payload["spec"], "classes": checked.spec["classes"]}}, kind)
    for key in ("architecture", "encoder", "mask_indices", "input_size", "normalization"):
        if doc[key] not in (derived[key], exported[key]):
            raise ModelFileError(
                f"{path}: {key} {doc[key]!r} contradicts the config ({derived[key]!r}); it follows from config and "
                "spec: edit those, or export the model again"
            )
    return payload


def _spec(path: Path, doc: PackageDocument) -> dict:
    """The dataset description, with the class names, palette and resolution the package states."""
    if doc.spec is None:
        raise ModelFileError(f"{path}: spec: a segmenter package needs its dataset description")
    trained = doc.spec.get("classes")
    if isinstance(trained, list) and len(doc.classes) != len(trained):
        raise ModelFileError(
            f"{path}: classes: {len(doc.classes)} names, spec.classes {len(trained)} "
            f"({', '.join(map(str, trained))}); classes may be renamed, not added or removed"
        )
    stated = {"classes": doc.classes, "mpp": doc.mpp, **({"palette": doc.palette} if doc.palette else {})}
    return _validated(path, "spec", DatasetSpec, {**doc.spec, **stated}).model_dump(mode="json")


def _validated(path: Path, key: str, model: type[BaseModel], value: dict) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as err:
        problems = [f"{key}.{'.'.join(map(str, e['loc']))}: {e['msg']}".replace(".: ", ": ") for e in err.errors()]
        raise ModelFileError(f"{path}: {'; '.join(problems[:3])}") from None


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path}: unreadable package config ({err})") from err
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: not a segmix package config")
    unknown = sorted(set(doc) - CONFIG_KEYS)
    if unknown:
        raise ModelFileError(f"{path}: unknown keys {', '.join(unknown)} (a newer package format?); upgrade segmix")
    return doc


def _check_version(folder: Path, doc: dict) -> None:
    from segmix import __version__

    declared = doc.get("format_version", 0)
    newer_format = isinstance(declared, int) and declared > FORMAT_VERSION  # other types: the schema says
    if newer_format or _version(doc.get("segmix", "0")) > _version(__version__):
        raise ModelFileError(
            f"{folder}: written by segmix {doc.get('segmix')} (package format {doc.get('format_version')}), "
            f"newer than this segmix {__version__}; upgrade segmix to load it"
        )


def _version(text: str) -> tuple[int, ...]:
    """``"0.1.0"`` -> ``(0, 1, 0)``; a part that is not a number ends the tuple."""
    parts = []
    for part in str(text).split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
