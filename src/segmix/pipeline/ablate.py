"""``segmix ablate``: mixing methods x seeds through the pipeline, one table.

The dataset (synthesised once when the config has no ``data``) and the fully supervised
reference (trained once, seed of the config) are shared; each (method, seed) runs stage 1,
pseudo masks, stage 2 and evaluation in ``OUT/<method>/seed<k>``. Finished runs are skipped
on a re-run (the pipeline's done-markers).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from segmix.config.run import RunConfig
from segmix.data.io import write_text
from segmix.data.spec import resolve_spec
from segmix.data.text import csv_text
from segmix.pipeline.stages import evaluate_model, run_pipeline, train_supervised


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 100:.2f} ± {sd * 100:.2f}"


def run_ablation(cfg: RunConfig, methods: list[str], seeds: int, out: str | Path, progress: bool = True) -> list[dict]:
    """Rows ``{method, seed, pseudo_miou, test_miou}``; writes ``ablation.csv`` and ``ablation.md``."""
    out = Path(out)
    base = cfg
    if cfg.data is None:
        run_pipeline(
            cfg.model_copy(update={"fully_supervised": False}), out / "shared", until="data", progress=progress
        )
        base = cfg.model_copy(update={"data": str((out / "shared" / "data").resolve())})
    reference = _reference(base, out / "reference", progress) if cfg.fully_supervised else None
    rows = []
    for method in methods:
        for seed in range(seeds):
            run_cfg = base.model_copy(
                update={"stage1": _with_method(base.stage1, method), "fully_supervised": False, "seed": seed}
            )
            m = run_pipeline(run_cfg, out / method / f"seed{seed}", until="evaluate", progress=progress)
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "pseudo_miou": (m.get("pseudo_masks") or {}).get("miou"),
                    "test_miou": (m.get("test") or {}).get("miou"),
                }
            )
            _write(rows, reference, out)
    return rows


def _with_method(stage1, method: str):
    return stage1.model_copy(update={"mixing": stage1.mixing.model_copy(update={"method": method})})


def _reference(cfg: RunConfig, out: Path, progress: bool) -> dict | None:
    """The pipeline's fully supervised reference (once), scored like the methods; None without
    train truth."""
    scores_file = out / "evaluate" / "scores.json"
    if not scores_file.is_file():
        data = Path(cfg.data)
        segmenter = train_supervised(cfg, data, resolve_spec(data, cfg.preset), out, progress, claim=True)
        if segmenter is None:
            return None
        evaluate_model(cfg, segmenter, data, out / "evaluate", 0)
    return json.loads(scores_file.read_text())


def _write(rows: list[dict], reference: dict | None, out: Path) -> None:
    write_text(out / "ablation.csv", csv_text(rows, ["method", "seed", "pseudo_miou", "test_miou"]))
    lines = ["| method | seeds | pseudo-mask mIoU (train) % | final mIoU (test) % |", "|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        pm = [r["pseudo_miou"] for r in sel if r["pseudo_miou"] is not None]
        tm = [r["test_miou"] for r in sel if r["test_miou"] is not None]
        lines.append(f"| {method} | {len(sel)} | {_mean_std(pm)} | {_mean_std(tm)} |")
    if reference:
        lines.append(f"| fully supervised (reference) | 1 | – | {reference['miou'] * 100:.2f} |")
    write_text(out / "ablation.md", "\n".join(lines) + "\n")
