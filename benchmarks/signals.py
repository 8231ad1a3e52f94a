"""Which held-out signal tells the curriculum's levels apart? Candidate signals per epoch vs pseudo-mask mIoU.

For each benchmark (``default``, ``hard``, both with ``configs/cpu.yaml``) and variant of
``benchmarks/feedback.py`` (stage 1 and pseudo masks only), a callback scores after every epoch,
on the validation tiles:

- ``cell_L`` / ``pixel_L``: :func:`segmix.train.losses.cell_hits` / ``pixel_hits`` on the tiles
  shuffled at ladder level L (drawn the same way every epoch), for every level;
- ``oracle``: mIoU of the label-gated CAM argmax of the *unmixed* tiles against their pixel truth
  (what a signal without pixel truth should track; the rule never sees it).

It prints, per benchmark, the last epoch's signals beside each run's pseudo-mask mIoU, the rank
correlation of each signal with it over the runs, and the per-epoch traces of the curricula that
move. Use a development data seed (default 0), not the held-out one of the feedback table.

Run: ``python benchmarks/signals.py --out runs/bench-signals --jobs 12`` (one GPU: minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lightning as L  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from feedback import BENCHMARKS, VARIANTS, config_file, synthesise  # noqa: E402
from segmix.data.dataset import TileDataset  # noqa: E402
from segmix.data.spec import resolve_spec  # noqa: E402
from segmix.eval.metrics import confusion_miou  # noqa: E402
from segmix.models.gate import gated_argmax  # noqa: E402
from segmix.shuffle import SegMix  # noqa: E402
from segmix.train.data import MaskedTiles  # noqa: E402
from segmix.train.losses import cell_hits, gated_confusion  # noqa: E402

DEADLINE = [float("inf")]  # perf_counter after which no job starts (--budget-s)
DEFAULT_VARIANTS = "none,fixed-0,fixed-1,fixed-2,fixed-3,fixed-4,fixed-5,scheduled,segmix"


def grow(cells, patch_size):
    """A (B, gh, gw) grid to pixels: (B, gh * patch_size, gw * patch_size)."""
    return cells.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)


def pixel_hits(maps, source, patch_size, labels, size):
    """cell_hits pixel by pixel: every pixel of a counted cell counts, a hit when the
    upsampled CAM's strongest class among the mixed image's is a class of its source."""
    batch, gh, gw = source.shape
    hard = labels > 0.5
    present = hard[source]
    gate = present.flatten(1, 2).any(dim=1)
    own = torch.arange(batch, device=source.device).view(-1, 1, 1)
    counted = (source != own) & (gate[:, None, None] & ~present).any(dim=-1)
    best = gated_argmax(maps.float(), gate, (gh * patch_size, gw * patch_size))
    hit = hard[grow(source, patch_size)].gather(-1, best[..., None]).squeeze(-1)
    mask = grow(counted, patch_size)
    return torch.stack([(hit & mask).sum(), mask.sum()]).float()


def agreement(maps, own, info, labels):
    """Swapped pixels whose class in the mixed image is the one the source tile's own CAM
    gives them: context independence (no truth needed)."""
    hard = labels > 0.5
    src, ps = info.source, info.patch_size
    gh, gw = src.shape[1:]
    present = hard[src]
    gate = present.flatten(1, 2).any(1)
    pixel_src = grow(src, ps)
    size = (gh * ps, gw * ps)
    mixed = gated_argmax(maps.float(), gate, size)
    alone = gated_argmax(own.float(), hard, size)
    rows = torch.arange(size[0], device=src.device).view(1, -1, 1).expand_as(pixel_src)
    cols = torch.arange(size[1], device=src.device).view(1, 1, -1).expand_as(pixel_src)
    from_source = alone[pixel_src, rows, cols]
    own_ix = torch.arange(len(src), device=src.device).view(-1, 1, 1)
    swapped = pixel_src != own_ix
    return torch.stack([((mixed == from_source) & swapped).sum(), swapped.sum()]).float()


class Probe(L.Callback):
    """Writes every epoch's candidate signals on the val tiles of ``data`` to ``csv_path``."""

    def __init__(self, data: Path, csv_path: Path) -> None:
        self.data, self.csv_path = data, csv_path

    def setup(self, trainer, module, stage):
        tiles = TileDataset(self.data, "val", resolve_spec(self.data))
        items = MaskedTiles(tiles, module.cfg.train.image_size)
        batch = [items[i] for i in range(len(items))]
        self.images = torch.stack([b[0] for b in batch])
        self.labels = torch.stack([b[1] for b in batch])
        self.masks = torch.stack([b[3] for b in batch]).long()
        self.rows: list[dict] = []

    def batches(self, module):
        for s in range(0, len(self.images), 32):
            yield (
                s,
                self.images[s : s + 32].to(module.device).float() / 255,
                self.labels[s : s + 32].to(module.device),
            )

    def mixed(self, module, size, ratio):
        """cell hits, pixel hits and agreement on the val tiles shuffled at (size, ratio)."""
        sums = torch.zeros(6)
        for s, x, y in self.batches(module):
            g = torch.Generator().manual_seed(1000 + s)  # the same shuffle every epoch
            xm, _, info = SegMix(size, ratio, 1.0, "union")(x, y, g)
            _, maps = module.model(module.normalize(xm))
            args = (maps.float(), info.source, info.patch_size, y, xm.shape[-2:])
            _, own = module.model(module.normalize(x))
            sums += torch.cat([cell_hits(*args), pixel_hits(*args), agreement(maps, own, info, y)]).cpu()
        return {
            "cell": float(sums[0] / sums[1]),
            "pixel": float(sums[2] / sums[3]),
            "agree": float(sums[4] / sums[5]),
        }

    def oracle(self, module):
        conf = torch.zeros(self.labels.shape[1], self.labels.shape[1])
        for s, x, y in self.batches(module):
            _, maps = module.model(module.normalize(x))
            conf += gated_confusion(maps.float().cpu(), y.cpu(), self.masks[s : s + 32])
        return float(confusion_miou(conf))

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        level_now = module.curriculum.level if module.curriculum is not None else -1
        row = {"epoch": trainer.current_epoch, "level_used": level_now}
        probes = {str(i): (lv.patch_size, lv.ratio) for i, lv in enumerate(module.cfg.levels())}
        probes.update({"28a": (28, 0.25), "28b": (28, 0.5)})
        with torch.no_grad():
            for name, (size, ratio) in probes.items():
                row.update({f"{kind}_{name}": v for kind, v in self.mixed(module, size, ratio).items()})
            row["oracle"] = self.oracle(module)
        self.rows.append(row)
        with self.csv_path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            w.writeheader()
            w.writerows(self.rows)


def run_job(bench: str, variant: str, seed: int, data: Path, folder: Path, extra: list[str]) -> None:
    """In its own process: stage 1 with the probe, then pseudo masks; writes result.json."""
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from segmix.config import load_config
    from segmix.config.run import RunConfig
    from segmix.pseudo import generate_pseudo_masks

    sets = [f"seed={seed}", "stage1.num_workers=1", "cams.num_workers=1"] + extra + VARIANTS[variant]
    cfg = load_config(RunConfig, config_file(BENCHMARKS[bench]), sets).seeded()
    clf = train_classifier_with_probe(cfg, data, folder)
    scores = generate_pseudo_masks(clf, data, folder / "pseudo", cfg.cams)
    (folder / "result.json").write_text(json.dumps({"pseudo_miou": scores.miou}))


def train_classifier_with_probe(cfg, data: Path, folder: Path) -> Path:
    from segmix.train import train_classifier

    probe = Probe(data, folder / "signals.csv")
    return train_classifier(cfg.stage1, data, folder / "stage1", progress=False, callbacks=[probe])


def job(bench: str, variant: str, seed: int, data: Path, out: Path, threads: int, extra: list[str]) -> dict | None:
    folder = out / bench / variant / f"seed{seed}"
    if not (folder / "result.json").is_file():
        if time.perf_counter() > DEADLINE[0]:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, __file__, "--job", bench, variant, str(seed), str(data), str(folder), *extra]
        with (folder / "log.txt").open("a") as fh:
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode:
                print(f"FAILED {bench} {variant} seed {seed}: see {folder / 'log.txt'}", flush=True)
                return None
        print(f"{bench} {variant} seed {seed} done", flush=True)
    result = json.loads((folder / "result.json").read_text())
    signals = list(csv.DictReader((folder / "signals.csv").open()))
    return {"benchmark": bench, "variant": variant, "seed": seed, **result, "signals": signals}


def spearman(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def report(rows: list[dict]) -> None:
    for bench in BENCHMARKS:
        sel = [r for r in rows if r["benchmark"] == bench]
        if not sel:
            continue
        keys = [k for k in sel[0]["signals"][-1] if k not in ("epoch", "level_used")]
        print(f"\n### {bench}: last epoch's signals (%)\n")
        print("| variant | seed | pseudo mIoU | " + " | ".join(keys) + " |")
        print("|---" * (3 + len(keys)) + "|")
        for r in sel:
            last = r["signals"][-1]
            vals = " | ".join(f"{float(last[k]) * 100:.1f}" for k in keys)
            print(f"| {r['variant']} | {r['seed']} | {r['pseudo_miou'] * 100:.2f} | {vals} |")
        fixed = [r for r in sel if r["variant"].startswith("fixed-") or r["variant"] == "none"]
        miou = [r["pseudo_miou"] for r in fixed]
        cors = {k: spearman([float(r["signals"][-1][k]) for r in fixed], miou) for k in keys}
        print("\nrank correlation with pseudo mIoU over none + fixed levels: ")
        print(", ".join(f"{k} {v:+.2f}" for k, v in cors.items()))
        for r in sel:
            if r["variant"] in ("scheduled", "segmix"):
                print(f"\n{r['variant']} seed {r['seed']} per epoch (level used: oracle / pixel_0 / pixel_1 / cell_0):")
                for s in r["signals"]:
                    print(
                        f"  e{s['epoch']} L{s['level_used']}: {float(s['oracle']):.3f} {float(s['pixel_0']):.3f} "
                        f"{float(s['pixel_1']):.3f} {float(s['cell_0']):.3f}"
                    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        bench, variant, seed, data, folder = sys.argv[2:7]
        run_job(bench, variant, int(seed), Path(data), Path(folder), sys.argv[7:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-signals"))
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--benchmarks", default="default,hard")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--data-seed", type=int, default=0, help="a development seed, not the feedback table's")
    ap.add_argument("--train-tiles", type=int, default=800)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra KEY=VALUE of the run config")
    ap.add_argument("--budget-s", type=float, default=None, help="start no job after this many seconds")
    args = ap.parse_args()
    if args.budget_s is not None:
        DEADLINE[0] = time.perf_counter() + args.budget_s
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    benches = args.benchmarks.split(",")
    data = {b: synthesise(b, args.data_seed, args.train_tiles, args.out) for b in benches}
    todo = [(b, v, int(s)) for b in benches for v in args.variants.split(",") for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda t: job(*t, data[t[0]], args.out, threads, args.extra), todo))
    print(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s")
    report([r for r in rows if r is not None])


if __name__ == "__main__":
    main()
