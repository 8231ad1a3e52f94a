"""``segmix relabel``: a trained segmenter's label-gated predictions on its own training tiles
become the pseudo masks of the next round of stage 2.

Stage 2 smooths over the CAMs' mistakes: on glas-dev its predictions on the training tiles, gated
by the image labels, score higher against the truth than the pseudo masks it learnt from. A
fresh segmenter trained on them (a round) inherits that. The maps are the segmenter's softmax
over the tissue classes, turned into masks by the same rule as CAMs
(:func:`segmix.pseudo.masks.gated_masks`: label gate, glass policy; every tissue pixel kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import ConfigDict, create_model

from segmix.config import save_config
from segmix.config.pseudo import MASK_INPUT_KEYS, CamConfig, RelabelConfig
from segmix.data.dataset import TileDataset
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import DatasetError, ModelFileError
from segmix.eval.metrics import SegScores
from segmix.models import load_segmenter, segment_probs
from segmix.pseudo.masks import gated_masks
from segmix.pseudo.write import MaskInputs, remove_partial_writes, write_scored_masks
from segmix.runtime import fit_threads, pick_device, rank_and_world

RelabelOptions = create_model(
    "RelabelOptions",
    __config__=ConfigDict(extra="forbid"),
    __doc__="What ``segmix relabel`` reads from its config and ``--set``: only keys it uses.",
    **{key: (CamConfig.model_fields[key].annotation, CamConfig.model_fields[key]) for key in MASK_INPUT_KEYS},
    scales=(RelabelConfig.model_fields["scales"].annotation, RelabelConfig.model_fields["scales"]),
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
    :func:`segmix.pseudo.generate_pseudo_masks` where the split has truth. Writes
    ``out_dir/relabel_config.yaml`` first: the keys it read, the segmenter and the dataset.
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
    tiles = TileDataset(data_root, cams.split, spec, with_masks=False, stain=model.stain)
    items = MaskInputs(tiles, cams.white, cams.saturation)
    if rank_and_world()[0] == 0:
        read = {**cams.model_dump(include=set(MASK_INPUT_KEYS)), "scales": list(scales)}
        save_config(
            RelabelOptions(**read), out / "relabel_config.yaml", segmenter=str(segmenter), dataset=str(data_root)
        )
        remove_partial_writes(out)

    def masks_of(group: list[dict]) -> tuple[np.ndarray, None, np.ndarray]:
        if any(g["label"] is None for g in group):
            raise DatasetError(f"{data_root}: split {cams.split!r} has tiles without image labels to gate the masks")
        probs = segment_probs(model, [g["image"] for g in group], cfg, dev, spec.num_indices, scales=scales)
        maps = torch.stack(probs)[:, : spec.num_classes]
        labels = torch.from_numpy(np.stack([g["label"] for g in group])).to(dev)
        masks, full = gated_masks(maps, labels, group, spec)
        return masks, None, full

    return write_scored_masks(items, out, cams.batch_size, workers, masks_of, on_batch)
