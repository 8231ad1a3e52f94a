"""The feedback probe: held-out cells of known class, in a fixed shuffle at the current level,
scored by the label-gated CAM (``val_cell_accuracy``, the mastery rule's signal)."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from segmix.config import Stage1Config
from segmix.shuffle import Level, MixInfo, create_mixer
from segmix.train.data import seeded_generator
from segmix.train.losses import cell_hits, probe_hits, probe_truth
from segmix.train.method import feedback_signal_name, method_of

log = logging.getLogger(__name__)


PROBE_CSV = "probe.csv"  # beside curriculum.csv: what each epoch's feedback reading rests on


def probe_batch(
    cfg: Stage1Config, level: Level, images: Tensor, labels: Tensor, masks: Tensor, index: int
) -> tuple[Tensor, MixInfo, Tensor | None]:
    """A held-out batch shuffled at ``level`` by the probe's random stream ``index`` (one per
    held-out batch, the same every epoch, so every epoch scores the same cells), and its cells'
    known classes (:func:`probe_truth`; None for ``probe: swapped``)."""
    name = method_of(cfg).mixer  # a grid mixer: the probe runs for methods that read cell_accuracy
    mixer = create_mixer(name, 1.0, level, **cfg.mixing.knobs(name))
    g = seeded_generator(cfg.seed, "probe", index)
    x, _, info = mixer(images.float() / 255, labels, g)
    if cfg.curriculum.probe == "swapped":
        return x, info, None
    return x, info, probe_truth(masks, labels, info.patch_size)


def probe_census(cfg: Stage1Config, level: Level, loader: DataLoader) -> int:
    """How many cells the probe counts at ``level`` on the held-out ``loader`` (no model: the
    cells, not the hits), for the report at start."""
    cells = 0
    for batch_idx, (images, labels, _, masks) in enumerate(loader):
        if len(images) < 2:
            continue
        x, info, truth = probe_batch(cfg, level, images, labels, masks, batch_idx)
        k = labels.shape[1]
        maps = torch.zeros(len(x), k, *info.source.shape[1:])
        cells += int(probe_score(maps, info, labels, truth, x.shape[-2:])[1])
    return cells


def probe_score(maps: Tensor, info: MixInfo, labels: Tensor, truth: Tensor | None, size) -> Tensor:
    """``(hits, cells)`` of a probe batch (:func:`probe_batch`): ``probe_hits`` on its known cells,
    or ``cell_hits`` with ``probe: swapped`` (``truth`` None)."""
    if truth is None:
        return cell_hits(maps, info.source, info.patch_size, labels, size)
    return probe_hits(maps, info.source, info.patch_size, labels, truth, size)


def report_probe(cfg: Stage1Config, val_loader: DataLoader) -> None:
    """Say at start how many cells the feedback probe counts at the first level, and warn when
    that is under ``curriculum.probe_cells``: readings of few cells move by chance."""
    if method_of(cfg).curriculum is None or feedback_signal_name(cfg) != "cell_accuracy":
        return
    with torch.random.fork_rng(devices=[]):  # a loader's iterator draws from the global RNG: init stays as it was
        cells = probe_census(cfg, cfg.levels()[0], val_loader)
    wanted = cfg.curriculum.probe_cells
    se = math.sqrt(0.25 / cells) if cells else 1.0  # the widest standard error, at accuracy 0.5
    if cells >= wanted:
        log.info("feedback probe: %d known cells at the first level (standard error <= %.3f)", cells, se)
        return
    log.warning(
        "feedback probe: %d known cells at the first level, under curriculum.probe_cells=%d: a reading's standard "
        "error is up to %.3f, so the curriculum's moves may follow chance; the run goes on with these cells "
        "(add held-out tiles with masks or single-label tiles, or use shuffle-fixed)",
        cells,
        wanted,
        se,
    )
