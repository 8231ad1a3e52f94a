"""The sections both training stages share, and the reading of configs segmix wrote earlier.

A stage config (:class:`segmix.config.stage1.Stage1Config`, :class:`segmix.config.stage2.Stage2Config`)
is made of sections: ``model``, ``train``, ``augment``, ``stain``, ``loss`` (both), ``mixing``,
``ladder``, ``curriculum`` (stage 1), ``inference`` (stage 2). How a stage
runs (seed, devices, precision) stays at the top level (:class:`RunOptions`), the same keys in both
stages. Keys of earlier layouts are refused with their new place (``--set epochs=5``: "moved to
train.epochs", see :func:`segmix.config.load_config`); values are checked against each other at
config time (a ladder that does not fit the tile, a fixed level past its end), never clamped.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from segmix.config.precision import PrecisionName
from segmix.section import Section


class RunOptions(Section):
    """How a training stage runs: seed, devices, precision, threads (the same keys in both stages)."""

    seed: int = Field(0, description="fixes data order, mixing, augmentation and initialisation")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes; null: what fits the cores (segmix.runtime)"
    )
    threads: int | None = Field(None, ge=1, description="torch threads per process; null: the cores the workers leave")
    precision: PrecisionName = Field(
        "auto",
        description="auto: bf16 autocast on GPUs and CPUs with native bf16, fp16 AMP on older GPUs, fp32 elsewhere; "
        "or 32, 16, bf16",
    )
    accelerator: str = Field("auto", description="Lightning's accelerator: auto (a GPU when there is one), gpu, cpu")
    devices: int | str = Field("auto", description="GPUs (or CPU processes) per node")
    num_nodes: int = Field(1, ge=1, description="machines a DDP run spans")
    strategy: str = Field("auto", description='"ddp" for several GPUs / nodes')

    moved_keys: ClassVar[dict[str, str]] = {}  # flat keys of the first layout -> their section.key

    @classmethod
    def upgrade_sections(cls, raw: dict) -> dict:
        """A sectioned config of an earlier layout in today's (a stage moves its own keys)."""
        return raw


# Keys that say where a run executes, not what it learns: a run may resume with other values, and
# `segmix run`'s stage hashes leave them out.
PLACEMENT_KEYS = frozenset({"num_workers", "threads", "devices", "num_nodes", "strategy", "accelerator"})


# The largest square tile a stage trains on, and a model package may declare: a size beyond it
# (a hand-edited file) would make every tile a huge tensor before anything else could fail.
MAX_IMAGE_SIZE = 4096


class TrainSection(Section):
    """Optimisation: both stages resize tiles to ``image_size`` and train with AdamW + cosine."""

    image_size: int = Field(
        112, ge=16, le=MAX_IMAGE_SIZE, description="training tiles (and stage-2 masks) are resized to this square"
    )
    batch_size: int = Field(32, ge=1, description="tiles per step (per process under DDP)")
    epochs: int = Field(10, ge=1, description="passes over the training tiles; may grow on resume")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (cosine decay over the epochs)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW's decoupled weight decay")
    backbone_lr: float | None = Field(None, gt=0, description="learning rate of the pretrained backbone (null: lr)")


class AugmentSection(Section):
    hed_jitter: float = Field(0.05, ge=0, le=0.5, description="stain jitter in HED space, per channel")
    dihedral: bool = Field(True, description="random flips and 90-degree rotations")


class StainSection(Section):
    """Stain normalisation (torchstain): fitted when the stage trains, stored in its model file,
    applied wherever that model reads tiles (training, pseudo masks, evaluation, prediction)."""

    method: Literal["none", "macenko", "reinhard"] = Field("none", description="none (off), macenko or reinhard")
    reference: str | None = Field(None, description="reference tile (image file); null: fit to train tiles")
    fit_tiles: int = Field(32, ge=1, description="train tiles pooled for the fit when there is no reference")


# Keys of the flat layout (before sections) and where they live now.
MOVED_COMMON = {
    "image_size": "train.image_size",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "hed_jitter": "augment.hed_jitter",
    "dihedral": "augment.dihedral",
    "weights": "model.weights",
}


def upgrade_flat_config(raw: dict, model: type[RunOptions]) -> dict:
    """A stage config of an earlier layout, as written into model files and run folders before,
    in today's: flat keys into sections, then the mixers' and rules' knobs under their names
    (``mixing.label_mix`` -> ``mixing.segmix.label_mix``, ``curriculum.mastery`` ->
    ``curriculum.mastery.mastery``...). A config of today's layout is returned as it is.

    Only for what segmix wrote itself (a model file, a run's ``config.yaml``): configs a person
    writes are refused with the new names instead (:func:`segmix.config.load_config`).
    """
    moved = getattr(model, "moved_keys", {})
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k not in moved}
    for old, new in moved.items():
        if old in raw:
            *sections, key = new.split(".")
            node = out
            for part in sections:
                node = node.setdefault(part, {})
            node[key] = raw[old]
    return model.upgrade_sections(out)
