"""Dataset description: one schema for every benchmark, the three published ones being presets.

A dataset folder in the *generic* layout carries a ``dataset.yaml`` that validates against
:class:`DatasetSpec`. LUAD-HistoSeg, BCSS-WSSS and WSSS4LUAD as distributed have no such file;
their descriptions live in :data:`PRESETS` and :func:`resolve_spec` picks one for a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segmix.data.io import write_text
from segmix.data.text import read_yaml, yaml_problem
from segmix.errors import DatasetError, validation_problems

SPEC_FILE = "dataset.yaml"
LabelFormat = Literal["space", "compact", "comma"]


class SplitDirs(BaseModel):
    """Folder names of the splits, relative to the dataset root."""

    model_config = ConfigDict(extra="forbid")
    train: str = "train"
    train_gt: str | None = None  # pixel truth of the train split, used only to score pseudo masks
    val: str | None = "val"
    test: str | None = "test"
    image_dir: str = "img"  # inside val/ and test/
    mask_dir: str = "mask"


class DatasetSpec(BaseModel):
    """What a dataset is: its classes, mask encoding, scoring protocol and folder layout.

    Mask indices ``0..K-1`` are the tissue classes in ``classes`` order, ``background_index``
    (normally ``K``) marks non-tissue / unlabelled pixels, 255 marks pixels to ignore.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    classes: list[str] = Field(min_length=1)
    palette: list[tuple[int, int, int]]
    background_index: int
    exclude_index: int | None  # truth pixels with this index are left out of every score
    glass_is_background: bool  # near-white glass becomes ``background_index`` in pseudo masks
    label_format: LabelFormat = "space"  # how this project writes labels; reading accepts all
    splits: SplitDirs = SplitDirs()
    # Microns per pixel of the tiles (None: unknown). Stored with the models trained on them, so
    # that slides are read at the same resolution (`segmix predict`).
    mpp: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if len(self.palette) < self.num_indices:
            raise ValueError(f"palette has {len(self.palette)} colours, masks use {self.num_indices} indices")
        if not 0 <= self.background_index < 255:
            raise ValueError("background_index must be in [0, 255)")
        if self.background_index < self.num_classes:
            raise ValueError(
                f"background_index {self.background_index} is the mask index of class "
                f"{self.classes[self.background_index]}; use {self.num_classes} or higher"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names repeat: {self.classes}")
        return self

    @property
    def num_classes(self) -> int:
        """Number of tissue classes K (the length of an image-level label)."""
        return len(self.classes)

    @property
    def num_indices(self) -> int:
        """Number of valid mask indices: the tissue classes plus the background index."""
        return max(self.num_classes, self.background_index + 1)

    @property
    def index_names(self) -> list[str]:
        """A name for every mask index: the classes, then ``background``."""
        return self.classes + ["background"] * (self.num_indices - self.num_classes)

    def save(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


_LUAD_PALETTE = [(205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 165, 0), (255, 255, 255)]

# Training resolution (``mpp``) of the presets, as the data's own sources state it:
# - BCSS-WSSS: 0.25 um/px. Its README names each patch after the BCSS image it was cropped from,
#   and those names carry the resolution ("..._MPP-0.2500+0[1101].png").
# - LUAD-HistoSeg: its README says "patches cropped from WSIs in 10X magnification", no microns
#   per pixel: unknown here (10x is about 1 um/px on common scanners, but not stated).
# - WSSS4LUAD: no resolution in the sources we read: unknown.
# Set ``mpp:`` in a dataset.yaml beside the data (``preset: luad-histoseg`` + ``mpp: ...``) when known.

PRESETS: dict[str, DatasetSpec] = {
    "luad-histoseg": DatasetSpec(
        name="luad-histoseg",
        classes=["TE", "NEC", "LYM", "TAS"],
        palette=_LUAD_PALETTE,
        background_index=4,
        exclude_index=4,
        glass_is_background=True,
        label_format="space",
    ),
    "bcss-wsss": DatasetSpec(
        name="bcss-wsss",
        classes=["TUM", "STR", "LYM", "NEC"],
        palette=_LUAD_PALETTE,
        background_index=4,
        exclude_index=4,
        glass_is_background=False,
        label_format="compact",
        mpp=0.25,
    ),
    "wsss4luad": DatasetSpec(
        name="wsss4luad",
        classes=["TUM", "STR", "NOR"],
        palette=[(0, 64, 128), (64, 128, 0), (243, 152, 0), (255, 255, 255)],
        background_index=3,
        exclude_index=3,
        glass_is_background=True,
        label_format="comma",
        splits=SplitDirs(train="1.training", val="2.validation", test="3.testing"),
    ),
}


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a ``dataset.yaml``; errors name the file and the key."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8 text
        raise DatasetError(path, f"cannot read dataset description ({yaml_problem(err)})") from err
    if not isinstance(raw, dict):
        raise DatasetError(path, "dataset description must be a mapping of keys to values")
    preset = raw.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise DatasetError(path, f"preset: {preset!r} is not a preset name; known: {', '.join(PRESETS)}")
        raw = {**PRESETS[preset].model_dump(), **raw}
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(validation_problems(err, DatasetSpec))
        raise DatasetError(path, f"invalid dataset description: {problems}") from err


def resolve_spec(root: str | Path, preset: str | None = None) -> DatasetSpec:
    """The description of the dataset at ``root``.

    Order: an explicit ``preset`` name, else ``root/dataset.yaml``, else the layout: a
    ``1.training`` folder means WSSS4LUAD; a ``train`` folder means LUAD-HistoSeg when its labels
    are written with spaces (``[1 0 0 1]``) and BCSS-WSSS when written compact (``[1001]``).
    """
    root = Path(root)
    if preset is not None:
        if preset not in PRESETS:
            raise DatasetError(root, f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return PRESETS[preset]
    if (root / SPEC_FILE).is_file():
        return load_spec(root / SPEC_FILE)
    if not root.is_dir():
        raise DatasetError(
            root, "is a file, not a dataset folder" if root.exists() else "dataset folder does not exist"
        )
    if (root / "1.training").is_dir():
        return PRESETS["wsss4luad"]
    train = root / "train"
    if train.is_dir():
        for f in sorted(train.iterdir()):
            if "[" in f.name and f.suffix.lower() == ".png":
                inside = f.name[f.name.rfind("[") + 1 : f.name.rfind("]")]
                return PRESETS["luad-histoseg" if " " in inside else "bcss-wsss"]
    raise DatasetError(
        root,
        f"no {SPEC_FILE} and the layout matches no preset; pass a preset ({', '.join(PRESETS)}) or add {SPEC_FILE}",
    )
