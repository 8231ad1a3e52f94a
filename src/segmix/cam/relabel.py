"""``segmix relabel``: a trained segmenter's label-gated predictions on its own training tiles
become the pseudo masks of the next round of stage 2.

Stage 2 smooths over the CAMs' mistakes: on glas-dev its predictions on the training tiles, gated
by the image labels, score higher against the truth than the pseudo masks it learnt from. A
fresh segmenter trained on them (a round) inherits that. The maps are the segmenter's softmax
over the tissue classes, turned into masks by the same rule as CAMs
(:func:`segmix.cam.run.gated_masks`: label gate, glass policy; every tissue pixel kept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, create_model

from segmix.cam.run import CamConfig, CamInputs, gated_masks, remove_partial_writes, write_scored_masks
from segmix.config.threads import fit_threads, rank_and_world
from segmix.data.dataset import TileDataset
from segmix.data.io import write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import DatasetError, ModelFileError
from segmix.eval.metrics import SegScores
from segmix.models import load_segmenter, pick_device, segment_probs

RELABEL_DONE = "relabel.json"  # written last: the masks are complete


class RelabelConfig(BaseModel):
    """Rounds of stage 2 on the previous round's label-gated predictions (``segmix run``)."""

    model_config = ConfigDict(extra="forbid")
    removed_keys: ClassVar[tuple[str, ...]] = ("margin",)  # refused with a note (segmix.errors)
    rounds: int = Field(
        1,
        ge=0,
        le=5,
        description="rounds of stage 2 retrained on the previous segmenter's label-gated predictions on the "
        "training tiles (0: off; why 1: docs/results/defaults.md)",
    )
    scales: list[Annotated[float, Field(ge=0.25, le=4)]] = Field(
        [0.5, 0.75, 1.0, 1.25, 1.5],
        min_length=1,
        description="the tiles resized by each factor for the segmenter, its probabilities averaged "
        "(multi-scale test-time augmentation of the round's maps, segmix.models.tta; [1.0]: the tiles as they "
        "are; why five: docs/results/defaults.md)",
    )


# The CamConfig keys a relabel round reads (which tiles, how many at once, glass, workers); the
# others (CAM scales, flip, refinement, precision) have no effect on a segmenter's maps.
RELABEL_CAM_KEYS = ("split", "batch_size", "white", "saturation", "num_workers", "threads")
RELABEL_KEYS = ("scales",)
RelabelOptions = create_model(
    "RelabelOptions",
    __config__=ConfigDict(extra="forbid"),
    __doc__="What ``segmix relabel`` reads from its config and ``--set``: only keys it uses.",
    **{key: (CamConfig.model_fields[key].annotation, CamConfig.model_fields[key]) for key in RELABEL_CAM_KEYS},
    **{key: (RelabelConfig.model_fields[key].annotation, RelabelConfig.model_fields[key]) for key in RELABEL_KEYS},
)


def relabel_masks(
    segmenter: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    cams: CamConfig | None = None,
    spec: DatasetSpec | None = None,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    scales: Sequence[float] | None = None,
) -> SegScores | None:
    """Write ``out_dir/masks/<image stem>.png`` from ``segmenter``'s predictions on the split's tiles.

    Each mask keeps, per pixel, the most probable class among the tile's image labels; glass
    follows the dataset's policy (``cams.white`` / ``cams.saturation``). ``cams`` also gives the split,
    batch size and workers (its CAM settings are not used); the segmenter runs at its own
    precision and test-time flip, on the tiles resized by each of ``scales`` (default:
    :class:`RelabelConfig`'s; probabilities averaged: :func:`segmix.models.segment_probs`). Scored like
    :func:`segmix.cam.generate_pseudo_masks` where the split has truth. Writes
    ``out_dir/relabel.json`` last: a resumed run keeps the masks when it is there.
    """
    cams = cams or CamConfig()
    scales = RelabelConfig(scales=scales).scales if scales else RelabelConfig().scales  # checked, one default
    spec = spec or resolve_spec(data_root)
    out = Path(out_dir)
    dev = pick_device(device)
    trained = load_segmenter(segmenter)
    model, cfg, trained_on = trained.network, trained.config, trained.spec
    if trained_on.classes != spec.classes:
        raise ModelFileError(f"{segmenter}: trained on classes {trained_on.classes}, dataset has {spec.classes}")
    model = model.to(dev)
    workers = fit_threads(cams.num_workers, cams.threads, gpu=dev.type == "cuda")
    items = CamInputs(TileDataset(data_root, cams.split, spec, with_masks=False, stain=model.stain), cams)
    if rank_and_world()[0] == 0:
        remove_partial_writes(out)

    def masks_of(group: list[dict]) -> tuple[np.ndarray, None, np.ndarray]:
        if any(g["label"] is None for g in group):
            raise DatasetError(f"{data_root}: split {cams.split!r} has tiles without image labels to gate the masks")
        probs = segment_probs(model, [g["image"] for g in group], cfg, dev, spec.num_indices, scales=scales)
        maps = torch.stack(probs)[:, : spec.num_classes]
        labels = torch.from_numpy(np.stack([g["label"] for g in group])).to(dev)
        masks, full = gated_masks(maps, labels, group, spec)
        return masks, None, full

    scores = write_scored_masks(items, out, cams.batch_size, workers, masks_of, on_batch)
    if rank_and_world()[0] == 0:
        done = {
            "segmenter": str(segmenter),
            "dataset": str(data_root),
            "split": cams.split,
            "scales": list(scales),
        }
        write_text(out / RELABEL_DONE, json.dumps(done, indent=2))
    return scores
