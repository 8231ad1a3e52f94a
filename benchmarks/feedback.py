"""Feedback curricula on the default and the hard synthetic benchmark: variants x seeds, mean ± std.

Every variant runs the whole pipeline of ``configs/cpu.yaml`` (the CPU recipe) with one change,
on data synthesised with ``--data-seed`` (pick one not used while developing; the configs' own
seed 0 was), for each training seed: stage 1,
pseudo masks (scored against ``train_gt``), stage 2 and evaluation on the test split. The
variants differ only in the curriculum or in one part of SegMix, so a row against ``segmix``
isolates that part:

- ``none``: no mixing; ``fixed-K``: ``shuffle-fixed`` at ladder level K; ``scheduled``: the level
  rises linearly; ``segmix-loss``: the earlier feedback (relative rule on the mixed-batch loss);
- ``segmix``: the default (mastery rule on the held-out cell accuracy, a class-balanced share of
  single-label tiles per batch); ``lookahead``: the lookahead rule (advance when the probe reads
  the next level as well as the current one); ``-single``: without that share; ``old-default``:
  ``segmix-loss`` without it (main before this benchmark); the patch pool, measured here, is removed;
  ``os8``:
  output stride 8 (finer CAMs; its cost is in ``seconds``);
- ``segmix-gain``: the gain rule on the val split's mIoU (``val_miou``); ``gain-dwell2``: at
  least two epochs per level; ``gain-single``: without the single-label share;
- ``random-level``: every batch at a level drawn uniformly from the whole ladder, no curriculum
  at all (the plug-in of ``random_level.py``);
- ``probe-swapped``: the feedback probe counting only swapped cells whose source lacks a class of
  the mixed image (its count before it read masks and single-label tiles); ``warmup-1``: a first
  epoch without shuffling, feedback from the second (the default before the probe);
- ``refine``, ``no-refine``, ``no-relabel``: the pseudo-mask and
  stage-2 parts of issue 22 (see ``benchmarks/real.py``; the refinement and one relabel round are
  on by default since); they start from the ``segmix`` run's finished stages of the same seed;
  ``stage1-8``: stage 1 for 8 epochs instead of the recipe's 16; ``stage1-8-no-relabel``: that and
  no relabel round, the recipe (then the demo) before both (from ``stage1-8``'s finished stages).

Jobs run ``--jobs`` at a time, each in its own process (set ``--jobs 1`` on a small CPU
machine). ``--stage2`` picks the variants that also train stage 2 (``all`` or a list); the rest
stop after the pseudo masks. Finished runs are skipped when re-run with the same ``--out``, and
``--budget-s`` stops starting new jobs after that many seconds, so a cut run still prints what
finished. Prints a markdown table per benchmark and the issue's goals, and writes
``results.csv``.

Run: ``python benchmarks/feedback.py --out runs/bench-feedback`` (on one GPU with ``--jobs 8``:
minutes; on 2 CPU cores about 6-8 minutes per run with the 16-epoch stage 1 and a round).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lookahead  # noqa: F401  (registers the lookahead rule: a plug-in, not in the product)
from random_level import SEGMIX  # registers the random-level control (a plug-in, not in the product)

HERE = Path(__file__).resolve().parent

BENCHMARKS = {"default": "cpu.yaml", "hard": "cpu.yaml"}  # one recipe; the synthesised data is the preset
LEVELS = 6  # the recipe's ladder: patch 56 / 16 / 14 px, each at swap ratio 0.25 and 0.5
SHUFFLE_FIXED = "stage1.mixing.method=shuffle-fixed"
VARIANTS = {
    "none": ["stage1.mixing.method=none"],
    **{f"fixed-{k}": [SHUFFLE_FIXED, f"stage1.curriculum.fixed.level={k}"] for k in range(LEVELS)},
    "scheduled": ["stage1.mixing.method=shuffle-scheduled"],
    "segmix-loss": ["stage1.mixing.method=segmix-loss"],
    "segmix": [],
    "lookahead": ["stage1.mixing.method=segmix-lookahead"],
    "segmix-gain": ["stage1.mixing.method=segmix-gain"],
    "gain-dwell2": ["stage1.mixing.method=segmix-gain", "stage1.curriculum.gain.dwell=2"],
    "gain-single": ["stage1.mixing.method=segmix-gain", "stage1.mixing.single_share=0"],
    "random-level": ["stage1.mixing.method=shuffle-random-level"],  # the plug-in of random_level.py
    "-single": ["stage1.mixing.single_share=0"],
    "old-default": ["stage1.mixing.method=segmix-loss", "stage1.mixing.single_share=0"],
    "os8": ["stage1.model.output_stride=8"],
    "probe-swapped": ["stage1.curriculum.probe=swapped"],
    "warmup-1": ["stage1.curriculum.mastery.warmup=1"],
    "refine": ["cams.refine_steps=10"],
    "no-refine": ["cams.refine_steps=0"],
    "no-margin": ["cams.margin=null"],
    "no-relabel": ["relabel.rounds=0"],
    "relabel-1": ["relabel.scales=[1.0]"],  # the round's maps at one scale (the default before)
    "none-1": ["stage1.mixing.method=none", "relabel.scales=[1.0]"],  # plain CAM, one scale
    "stage1-8": ["stage1.train.epochs=8"],
    "stage1-8-no-relabel": ["stage1.train.epochs=8", "relabel.rounds=0"],  # the recipe before both
}
FIXED = [f"fixed-{k}" for k in range(LEVELS)]
GOAL_OVER_NONE = {"default": 7.0, "hard": 4.0}
OURS = ("segmix", "segmix-gain")  # the feedback methods the goals are checked for


def config_file(name: str) -> Path:
    import segmix

    return Path(segmix.__file__).parent / "configs" / name


def run(cmd: list[str], log: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))  # random_level
    with log.open("a") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=True)


def job(
    bench: str, variant: str, seed: int, data: Path, out: Path, stage2: bool, threads: int, extra: list[str]
) -> dict | None:
    """One pipeline run; its result row (None when it failed: see its log)."""
    folder = out / bench / variant / f"seed{seed}"
    result = folder / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    sets = [f"seed={seed}", "fully_supervised=false"]
    sets += [f"{stage}.num_workers=1" for stage in ("stage1", "stage2", "cams")] + extra + VARIANTS[variant]
    base, added = upstream(VARIANTS, variant, out / bench, seed)
    reuse_upstream(base, folder, added)
    done = pipeline_run(BENCHMARKS[bench], data, folder, sets, stage2, threads)
    if done is None:
        return None
    row = {"benchmark": bench, "variant": variant, "seed": seed, **done, **trace(folder / "stage1")}
    result.write_text(json.dumps(row))
    print(f"{bench} {variant} seed {seed}: pseudo {row['pseudo_miou']:.4f} test {row['test_miou']}", flush=True)
    return row


REUSABLE = ["data", "stage1", "cams", "stage2", "relabel"]  # segmix run's stages in order, up to the final model


def stages_before_change(sets: list[str]) -> int:
    """How many of :data:`REUSABLE`'s stages come before the first one ``sets`` change: all of
    them for no change, none when a set touches the data or stage 1 (e.g. ``seed``, ``stage1.*``)."""
    touched = {s.split(".")[0] for s in sets}
    if not touched <= set(REUSABLE[2:]):
        return 0
    return min((REUSABLE.index(t) for t in touched), default=len(REUSABLE))


def upstream(variants: dict[str, list[str]], variant: str, runs: Path, seed: int) -> tuple[Path, list[str]]:
    """The finished run (``runs/<variant>/seed<seed>``) a variant's run starts from, and the
    changes the variant adds to it: of the variants already run whose changes it has too, the one
    that leaves the most stages to copy (``segmix``'s run when none does), so a combination such
    as ``stage1-8-no-relabel`` reruns only what it adds to ``stage1-8``."""
    mine = variants[variant]
    added = {
        b: [s for s in mine if s not in sets]
        for b, sets in variants.items()
        if b != variant and set(sets) <= set(mine) and (runs / b / f"seed{seed}" / "stage1" / ".done.json").is_file()
    }
    base = max(added, key=lambda b: stages_before_change(added[b]), default="segmix")
    return runs / base / f"seed{seed}", added.get(base, mine)


def reuse_upstream(base: Path, folder: Path, sets: list[str]) -> None:
    """Start a variant that changes only the pseudo masks, stage 2 or the relabel rounds (``sets``,
    its changes to ``base``) from the finished stages of the run in ``base`` (``segmix run`` skips
    a stage whose hash matches, so nothing is assumed)."""
    if folder == base or not (base / "stage1" / ".done.json").is_file() or (folder / "stage1").exists():
        return
    for stage in REUSABLE[: stages_before_change(sets)]:
        if (base / stage).is_dir():
            shutil.copytree(base / stage, folder / stage, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))


def pipeline_run(config: str, data: Path, folder: Path, sets: list[str], stage2: bool, threads: int) -> dict | None:
    """``segmix run`` of the packaged ``config`` on ``data`` into ``folder`` with ``--set``s, up
    to the pseudo masks (or the evaluation); its scores and seconds (None when it failed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", SEGMIX, "run", str(config_file(config)), "--out", str(folder)]
    cmd += ["--data", str(data), "--until", "evaluate" if stage2 else "cams"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    try:
        run(cmd, folder / "log.txt", threads)
    except subprocess.CalledProcessError:
        print(f"FAILED {folder}: see {folder / 'log.txt'}", flush=True)
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "pseudo_miou": metrics["pseudo_masks"]["miou"],
        "test_miou": (metrics.get("test") or {}).get("miou"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def trace(stage1: Path) -> dict:
    """The levels the curriculum used (one digit per epoch, ``w``: warm-up)."""
    out = {"levels": ""}
    if (stage1 / "curriculum.csv").is_file():
        rows = list(csv.DictReader((stage1 / "curriculum.csv").open()))
        out["levels"] = "".join("w" if r["action"] == "warmup" else r["level"] for r in rows)
    return out


def supervised(bench: str, data: Path, out: Path, threads: int, extra: list[str]) -> float | None:
    """Test mIoU of stage 2 trained on the true train masks (seed 0)."""
    return supervised_run(BENCHMARKS[bench], data, out / bench / "fully-supervised", threads, extra)


def supervised_run(config: str, data: Path, folder: Path, threads: int, extra: list[str]) -> float | None:
    """Test mIoU of stage 2 of the packaged ``config`` trained on the true train masks of ``data``
    in ``folder`` (None when it failed: see its log)."""
    result = folder / "result.json"
    if not result.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; from pathlib import Path; from segmix.config import load_config;"
            "from segmix.config.run import RunConfig; from segmix.data.spec import resolve_spec;"
            "from segmix.pipeline.stages import train_supervised, evaluate_model;"
            "cfg = load_config(RunConfig, Path(sys.argv[1]), ['stage2.num_workers=1', *sys.argv[4:]]).seeded();"
            "d = Path(sys.argv[2]); o = Path(sys.argv[3]);"
            "m = train_supervised(cfg, d, resolve_spec(d, cfg.preset), o, False, claim=True);"
            "s = evaluate_model(cfg, m, d, o / 'evaluate', 0); print(s)"
        )
        cmd = [sys.executable, "-c", code, str(config_file(config)), str(data), str(folder), *extra]
        try:
            run(cmd, folder / "log.txt", threads)
        except subprocess.CalledProcessError:
            print(f"FAILED fully supervised: see {folder / 'log.txt'}", flush=True)
            return None
        scores = json.loads((folder / "evaluate" / "scores.json").read_text())
        result.write_text(json.dumps({"test_miou": scores["miou"]}))
    return json.loads(result.read_text())["test_miou"]


def synthesise(bench: str, seed: int, tiles: int, out: Path) -> Path:
    data = out / "data" / f"{bench}-seed{seed}-{tiles}"
    if not (data / "dataset.yaml").is_file():
        preset = "hard" if bench == "hard" else "default"
        cmd = [sys.executable, "-m", "segmix.cli", "synth", "--out", str(data), "--preset", preset, "--seed", str(seed)]
        subprocess.run(cmd + ["--train", str(tiles), "--no-sheet"], check=True, stdout=subprocess.DEVNULL)
    return data


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 100:.2f} ± {sd * 100:.2f}"


def mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(vals) * 100 if vals else None


def table(bench: str, rows: list[dict], reference: float | None) -> list[str]:
    lines = [
        f"### {bench} benchmark",
        "",
        "| variant | seeds | pseudo-mask mIoU (train) % | final mIoU (test) % | levels per epoch (seed 0) | s / run |",
        "|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        sel = [r for r in rows if r["variant"] == name]
        if not sel:
            continue
        first = min(sel, key=lambda r: r["seed"])
        lines.append(
            f"| {name} | {len(sel)} | {mean_std([r['pseudo_miou'] for r in sel])} | "
            f"{mean_std([r['test_miou'] for r in sel if r['test_miou'] is not None])} | {first['levels'] or '–'} | "
            f"{statistics.mean(r['seconds'] for r in sel):.0f} |"
        )
    if reference is not None:
        lines.append(f"| fully supervised (reference) | 1 | – | {reference * 100:.2f} | – | – |")
    return lines + [""] + goals(bench, rows, reference) + [""]


def goals(bench: str, rows: list[dict], reference: float | None) -> list[str]:
    """The issue's goals for each feedback method that ran, with the numbers and met / missed."""

    def pseudo(name: str) -> float | None:
        return mean([r for r in rows if r["variant"] == name], "pseudo_miou")

    none = pseudo("none")
    fixed = [v for v in (pseudo(n) for n in FIXED) if v is not None]
    out = []
    for name in OURS:
        ours = pseudo(name)
        if ours is None:
            continue
        if fixed:
            best, med = max(fixed), statistics.median(fixed)
            out.append(f"- {name} {ours:.2f} >= best fixed level {best:.2f}: {'met' if ours >= best else 'missed'}")
            met = "met" if ours >= med + 2 else "missed"
            out.append(f"- {name} {ours:.2f} >= median fixed {med:.2f} + 2: {met}")
        if none is not None:
            need = GOAL_OVER_NONE[bench]
            met = "met" if ours >= none + need else "missed"
            out.append(f"- {name} {ours:.2f} >= none {none:.2f} + {need:g}: {met}")
        final = mean([r for r in rows if r["variant"] == name], "test_miou")
        if final is not None and reference:
            ratio = final / (reference * 100)
            out.append(
                f"- {name} final test {final:.2f} / fully supervised {reference * 100:.2f} = {ratio:.3f} >= 0.92: "
                f"{'met' if ratio >= 0.92 else 'missed'}"
            )
    return out or ["(no feedback method ran)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-feedback"))
    ap.add_argument("--benchmarks", default="default,hard")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated")
    ap.add_argument("--data-seed", type=int, default=7, help="synthetic data seed (held out: not 0)")
    ap.add_argument("--stage2", default="all", help="variants that also train stage 2: all, none, or a list")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each in its own process)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no job after this many seconds")
    ap.add_argument("--train-tiles", type=int, default=800, help="synthetic training tiles (the configs' 800)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="pipeline key=value for every run")
    ap.add_argument("--collect", type=Path, nargs="+", help="only tabulate these results.csv files (later rows win)")
    args = ap.parse_args()
    if args.collect:
        collect(args.collect)
        return
    t0 = time.perf_counter()
    benches = args.benchmarks.split(",")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS] + [b for b in benches if b not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown variant or benchmark: {', '.join(unknown)}; known: {', '.join([*VARIANTS, *BENCHMARKS])}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    with_stage2 = set(variants if args.stage2 == "all" else [] if args.stage2 == "none" else args.stage2.split(","))
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    data = {b: synthesise(b, args.data_seed, args.train_tiles, args.out) for b in benches}
    jobs = [(b, v, s) for s in seeds for b in benches for v in variants]

    def start(item):
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            return None
        b, v, s = item
        return job(b, v, s, data[b], args.out, v in with_stage2, threads, args.extra)

    with ThreadPoolExecutor(args.jobs) as pool:
        refs = {b: pool.submit(supervised, b, data[b], args.out, threads, args.extra) for b in benches if with_stage2}
        rows = [r for r in pool.map(start, jobs) if r is not None]
        reference = {b: f.result() for b, f in refs.items()}
    rows += [
        {"benchmark": b, "variant": "fully-supervised", "seed": 0, "test_miou": v} for b, v in reference.items() if v
    ]
    if rows:
        with (args.out / "results.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\ndata seed {args.data_seed}, training seeds {seeds}, {args.jobs} jobs at a time, device {device}, "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for b in benches:
        print("\n".join(table(b, [r for r in rows if r["benchmark"] == b], reference.get(b))))


def collect(files: list[Path]) -> None:
    """Print the tables of finished results (``results.csv`` of one or more runs)."""

    def number(text: str, kind=float):
        return None if text in ("", None) else kind(text)

    merged: dict[tuple, dict] = {}
    for f in files:
        for r in csv.DictReader(f.open()):
            row = {**r, "seed": int(r["seed"]), "pseudo_miou": number(r.get("pseudo_miou"))}
            row |= {"test_miou": number(r.get("test_miou")), "seconds": number(r.get("seconds"))}
            merged[(r["benchmark"], r["variant"], row["seed"])] = row
    rows = list(merged.values())
    for b in BENCHMARKS:
        ref = next((r["test_miou"] for r in rows if r["benchmark"] == b and r["variant"] == "fully-supervised"), None)
        sel = [r for r in rows if r["benchmark"] == b and r["variant"] in VARIANTS]
        if sel:
            print("\n".join(table(b, sel, ref)))


if __name__ == "__main__":
    main()
