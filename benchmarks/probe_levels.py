"""Does the feedback probe rank the levels the way the pseudo masks do? For finished runs of
``benchmarks/real.py`` (one per fixed level, say), the probe's reading of each run's classifier
at every level of its ladder, on the same held-out cells the curriculum reads, beside the run's
pseudo-mask mIoU.

A rule that compares levels by the probe (the lookahead rule reads the next level) can only find
the best fixed level if the classifier trained at that level reads highest somewhere; this prints
whether one does.

Run: ``python benchmarks/probe_levels.py runs/r224/sweep8/{none,fixed-0,fixed-1,fixed-2}/seed0
--data runs/glas-dev-224`` (2 CPU cores: ~10 s per run and level at 224 px).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import lookahead  # noqa: F401  (the benchmarks' plug-ins: the classifiers of their runs load)
import random_level  # noqa: F401
from segmix.data.dataset import TileDataset
from segmix.data.spec import resolve_spec
from segmix.models import load_classifier
from segmix.train.data import MaskedTiles
from segmix.train.probe import probe_batch, probe_score


@torch.no_grad()
def readings(run: Path, data: Path) -> tuple[list[float], float]:
    """The probe's accuracy at each ladder level for ``run``'s classifier, and its pseudo-mask mIoU."""
    model, cfg, _ = load_classifier(run / "stage1" / "classifier.pt")
    model.eval()
    # The probe shuffles with the run's grid mixer: a plain-CAM run has none, so read it with segmix's.
    cfg = cfg.model_copy(update={"mixing": cfg.mixing.model_copy(update={"method": "segmix"})})
    tiles = TileDataset(data, "val", resolve_spec(data), stain=model.stain)
    loader = DataLoader(MaskedTiles(tiles, cfg.train.image_size, crop_large=True), batch_size=cfg.train.batch_size)
    out = []
    for level in cfg.levels():
        cells = torch.zeros(2)
        for index, (images, labels, _, masks) in enumerate(loader):
            if len(images) < 2:
                continue
            x, info, truth = probe_batch(cfg, level, images, labels, masks, index)
            _, maps = model(model.normalize(x).contiguous(memory_format=torch.channels_last))
            cells += probe_score(maps.float(), info, labels, truth, x.shape[-2:])
        out.append(float(cells[0] / cells[1]) if cells[1] else float("nan"))
    pseudo = json.loads((run / "metrics.json").read_text())["pseudo_masks"]["miou"]
    return out, pseudo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="finished run folders (stage1/classifier.pt, metrics.json)")
    ap.add_argument("--data", type=Path, required=True, help="the dataset they trained on (its val split)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [(run, *readings(run, args.data)) for run in args.runs]
    n = len(rows[0][1])
    print("| run | pseudo-mask mIoU % | " + " | ".join(f"probe at level {k}" for k in range(n)) + " |")
    print("|---|---|" + "---|" * n)
    for run, values, pseudo in rows:
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {run.parent.name}/{run.name} | {pseudo * 100:.2f} | {cells} |")


if __name__ == "__main__":
    main()
