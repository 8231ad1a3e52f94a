"""Variants on a real development set: pseudo-mask mIoU and, with ``--stage2``, the final model's
test mIoU and its ratio to a fully supervised one (same seeds), mean ± std over seeds, with the
curriculum's levels and the feedback probe's cells per run.

``DATA_DIR`` is any dataset in segmix's layout with ``train_gt/`` (pixel truth of the training
tiles, to score the pseudo masks), e.g. glas-dev (``../shared/benchmarks/glas-dev/build.sh``;
research use only: never commit it or numbers per tile). Every variant runs ``configs/cpu.yaml``
(the CPU recipe; ``--config cpu-224.yaml`` at 224 px) with one change up to the pseudo masks
(``--stage2`` also trains and tests stage 2):

- ``none``: no mixing (plain CAM); ``fixed-K``: the shuffle at ladder level K all along;
  ``random-level``: every batch at a level drawn from the whole ladder, no curriculum;
- ``segmix``: the default (mastery rule on the probe's cell accuracy); ``lookahead``: the
  lookahead rule (advance when the probe reads the next level as well as the current one);
- ``probe-swapped``: the probe counting only swapped cells whose source lacks a class of the
  mixed image (the count before the probe had masks and single-label tiles);
- ``mastery-0.8`` / ``mastery-0.75``: a lower mastery line; ``warmup-1``: a first epoch
  without shuffling, feedback from the second (the default before the probe);
- stage 2 and the pseudo masks (issue 22): ``refine``: colour-adaptive refinement of the CAMs
  (``cams.refine_steps=10``, the default since it was measured; ``no-refine``: off, the default
  before, and the ``segmix`` row of the README's glas-dev table); ``scales-0.75``: CAMs
  also at 0.75x; ``no-margin``: every pixel of the pseudo masks trained on (``cams.margin``
  null; the default is 0.2 since it was measured: pixels whose two strongest labelled CAMs lie
  closer are left out of stage 2's loss); ``margin-0.1`` / ``margin-0.3``: other margins;
  ``no-relabel``: no round of stage 2 on stage 2's own label-gated predictions on the training
  tiles (``relabel.rounds=0``; the default is one round); ``relabel-2``: two rounds;
  ``stage1-8``: stage 1 for 8 epochs instead of the recipe's 16 (its cosine schedule shrunk with
  them); ``stage1-8-no-relabel``: that and no round, the recipe (then the demo) before both were measured
  (``benchmarks/results/stage1_epochs_*``, whose names are those of then: ``segmix`` there is
  this one, ``stage1-16-relabel`` there today's ``segmix``). Variants that change only the pseudo
  masks, stage 2 or the rounds start from the finished stages of the same seed's run that has
  the most of them in common (``segmix``'s, or e.g. ``stage1-8``'s for ``stage1-8-no-relabel``).
  Stage 2 on mosaics, an EMA teacher, starting stage 2 from the classifier and generalized
  cross-entropy were measured here too and removed (docs/results/glas-dev.md).

Prints a markdown table (mean ± std over ``--seeds``, levels per epoch and probe cells at the
first epoch of the first seed) and the issue's goals, and writes ``results.csv`` in ``--out``.
Finished runs are skipped when re-run with the same ``--out``.

Run: ``python benchmarks/real.py /path/to/glas-dev --out runs/bench-real --seeds 0,1`` (2 CPU
cores: about 90 s per run up to the pseudo masks, 200 s with ``--stage2``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from feedback import LEVELS, mean_std, pipeline_run, reuse_upstream, supervised_run, trace, upstream  # noqa: E402

REFINE = "cams.refine_steps=10"
NO_REFINE = "cams.refine_steps=0"  # the default before the refinement was measured
SHUFFLE_FIXED = "stage1.mixing.method=shuffle-fixed"
NO_MARGIN = "cams.margin=null"  # the default before the margin was measured
VARIANTS = {
    "none": ["stage1.mixing.method=none"],
    **{f"fixed-{k}": [SHUFFLE_FIXED, f"stage1.curriculum.fixed.level={k}"] for k in range(LEVELS)},
    "random-level": ["stage1.mixing.method=shuffle-random-level"],  # the plug-in of random_level.py
    "segmix": [],
    "lookahead": ["stage1.mixing.method=segmix-lookahead"],
    "probe-swapped": ["stage1.curriculum.probe=swapped"],
    "mastery-0.8": ["stage1.curriculum.mastery.mastery=0.8"],
    "mastery-0.75": ["stage1.curriculum.mastery.mastery=0.75"],
    "warmup-1": ["stage1.curriculum.mastery.warmup=1"],
    "refine": [REFINE],
    "no-refine": [NO_REFINE],
    "scales-0.75": ["cams.scales=[0.75,1.0,1.5]"],
    "no-margin": [NO_MARGIN],
    "margin-0.1": ["cams.margin=0.1"],
    "margin-0.3": ["cams.margin=0.3"],
    "no-relabel": ["relabel.rounds=0"],
    "relabel-2": ["relabel.rounds=2"],
    "relabel-1": ["relabel.scales=[1.0]"],  # the round's maps at one scale (the default before)
    "none-1": ["stage1.mixing.method=none", "relabel.scales=[1.0]"],  # plain CAM, one scale
    "stage1-8": ["stage1.train.epochs=8"],
    "stage1-8-no-relabel": ["stage1.train.epochs=8", "relabel.rounds=0"],  # the recipe before both
}
CONTROLS = [f"fixed-{k}" for k in range(LEVELS)] + ["random-level"]
GOAL_OVER_NONE = 5.0
GOAL_FINAL_RATIO, GOAL_FINAL_OVER_NONE = 0.90, 3.0


def job(
    variant: str, seed: int, data: Path, out: Path, stage2: bool, extra: list[str], config: str = "cpu.yaml"
) -> dict | None:
    """One pipeline run; its result row (None when it failed: see its log)."""
    folder = out / variant / f"seed{seed}"
    result = folder / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    sets = [f"seed={seed}", "fully_supervised=false", *extra, *VARIANTS[variant]]
    base, added = upstream(VARIANTS, variant, out, seed)
    reuse_upstream(base, folder, added)
    done = pipeline_run(config, data, folder, sets, stage2, threads=2)
    if done is None:
        return None
    row = {
        "variant": variant,
        "seed": seed,
        **done,
        "levels": trace(folder / "stage1")["levels"],
        **probe(folder / "stage1"),
    }
    result.write_text(json.dumps(row))
    final = f" final {row['test_miou']:.4f}" if row.get("test_miou") is not None else ""
    print(f"{variant} seed {seed}: pseudo {row['pseudo_miou']:.4f}{final} levels {row['levels']}", flush=True)
    return row


def probe(stage1: Path) -> dict:
    """The probe's cells and standard error at the first epoch and the mean over epochs."""
    path = stage1 / "probe.csv"
    if not path.is_file():
        return {"probe_cells": None, "probe_se": None}
    rows = list(csv.DictReader(path.open()))
    return {"probe_cells": float(rows[0]["count"]), "probe_se": statistics.mean(float(r["se"]) for r in rows)}


def table(rows: list[dict], reference: dict[int, float]) -> list[str]:
    """Markdown rows per variant; ``reference``: the fully supervised test mIoU per seed."""
    lines = [
        "| variant | seeds | pseudo-mask mIoU (train) % | final mIoU (test) % | final / fully supervised |"
        " levels per epoch (each seed) | probe cells (1st epoch) / mean SE | s per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        sel = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["seed"])
        if not sel:
            continue
        cells = [r for r in sel if r.get("probe_cells") is not None]
        cell_text = (
            f"{cells[0]['probe_cells']:.0f} / {statistics.mean(r['probe_se'] for r in cells):.3f}" if cells else "–"
        )
        tests = [r["test_miou"] for r in sel if r.get("test_miou") is not None]
        ratios = [r["test_miou"] / reference[r["seed"]] for r in sel if r.get("test_miou") and reference.get(r["seed"])]
        ratio = f"{statistics.mean(ratios):.3f}" if ratios else "–"
        lines.append(
            f"| {name} | {len(sel)} | {mean_std([r['pseudo_miou'] for r in sel])} | {mean_std(tests)} | {ratio} | "
            f"{' '.join(r['levels'] or '–' for r in sel)} | {cell_text} | "
            f"{statistics.mean(r['seconds'] for r in sel):.0f} |"
        )
    if reference:
        ref = list(reference.values())
        lines.append(f"| fully supervised (reference) | {len(ref)} | – | {mean_std(ref)} | 1 | – | – | – |")
    return lines


def goals(rows: list[dict], reference: dict[int, float], ours: str = "segmix") -> list[str]:
    """The goals for ``ours``: pseudo masks over plain CAM + 5 points and over every fixed level
    and random-level; with stage 2, a final model >= 0.90 of the fully supervised one (same
    seeds) and >= plain CAM's final model + 3 points."""

    def mean_of(name: str, key: str) -> float | None:
        vals = [r[key] * 100 for r in rows if r["variant"] == name and r.get(key) is not None]
        return statistics.mean(vals) if vals else None

    mine, none = mean_of(ours, "pseudo_miou"), mean_of("none", "pseudo_miou")
    if mine is None:
        return [f"({ours} did not run)"]
    out = []
    if none is not None:
        met = "met" if mine >= none + GOAL_OVER_NONE else "missed"
        out.append(f"- {ours} pseudo {mine:.2f} >= none {none:.2f} + {GOAL_OVER_NONE:g}: {met}")
    for name in CONTROLS:
        other = mean_of(name, "pseudo_miou")
        if other is not None:
            out.append(f"- {ours} pseudo {mine:.2f} >= {name} {other:.2f}: {'met' if mine >= other else 'missed'}")
    final, none_final = mean_of(ours, "test_miou"), mean_of("none", "test_miou")
    seeds = [r["seed"] for r in rows if r["variant"] == ours and r.get("test_miou") is not None]
    if final is not None and all(s in reference for s in seeds):
        ref = statistics.mean(reference[s] for s in seeds) * 100
        met = "met" if final >= GOAL_FINAL_RATIO * ref else "missed"
        out.append(f"- {ours} final {final:.2f} >= {GOAL_FINAL_RATIO:g} x fully supervised {ref:.2f}: {met}")
    if final is not None and none_final is not None:
        met = "met" if final >= none_final + GOAL_FINAL_OVER_NONE else "missed"
        out.append(f"- {ours} final {final:.2f} >= none final {none_final:.2f} + {GOAL_FINAL_OVER_NONE:g}: {met}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="dataset root with train_gt/ (e.g. glas-dev)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-real"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1", help="training seeds, comma separated")
    ap.add_argument("--stage2", action="store_true", help="also train and test stage 2 (and the fully supervised one)")
    ap.add_argument("--goals", default="segmix", help="variants whose goals are checked, comma separated")
    ap.add_argument("--config", default="cpu.yaml", help="packaged recipe every run starts from (cpu-224.yaml: 224 px)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="pipeline key=value for every run")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant: {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not (args.data / "train_gt").is_dir():
        sys.exit(f"{args.data}: no train_gt/ to score the pseudo masks against")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t0 = time.perf_counter()
    rows = [
        r
        for s in seeds
        for v in variants
        if (r := job(v, s, args.data, args.out, args.stage2, args.extra, args.config))
    ]
    reference = {}
    if args.stage2:
        for s in seeds:
            folder = args.out / "fully-supervised" / f"seed{s}"
            if (ref := supervised_run(args.config, args.data, folder, 2, [f"seed={s}", *args.extra])) is not None:
                reference[s] = ref
    if rows:
        with (args.out / "results.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"\n{args.data.name}: training seeds {seeds}, {time.perf_counter() - t0:.0f} s\n")
    print("\n".join(table(rows, reference)))
    for ours in args.goals.split(","):
        print("\n" + "\n".join(goals(rows, reference, ours)))


if __name__ == "__main__":
    main()
