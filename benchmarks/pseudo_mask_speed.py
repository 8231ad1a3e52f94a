"""Pseudo-mask throughput (images/s) of ``segmix cams`` with and without DataLoader workers.

    python benchmarks/pseudo_mask_speed.py --classifier RUN/stage1/classifier.pt --data RUN/data

Runs ``generate_pseudo_masks`` over the train split once per worker count (after one warm-up
batch), writing into a temporary folder, and prints a table. The masks are the same for every
worker count (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.png")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from segmix.data.dataset import TileDataset
    from segmix.pseudo import CamConfig, generate_pseudo_masks

    n = len(TileDataset(args.data, "train", with_masks=False))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        cfg = CamConfig(num_workers=workers)
        times, digests = [], set()
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                generate_pseudo_masks(args.classifier, args.data, out, cfg)
                times.append(time.perf_counter() - t0)
                digests.add(digest(Path(out) / "masks"))
        best = min(times)
        rows.append((workers, n / best, best, digests))
    print(f"\n{n} tiles, {device}, torch threads {torch.get_num_threads()}, scales {CamConfig().scales}, flip")
    print("| DataLoader workers (and writer threads) | images/s (best of runs) | seconds |")
    print("|---|---|---|")
    for workers, rate, seconds, _ in rows:
        print(f"| {workers} | {rate:.1f} | {seconds:.1f} |")
    assert len(set().union(*(d for *_, d in rows))) == 1, "masks differ between worker counts"


if __name__ == "__main__":
    main()
