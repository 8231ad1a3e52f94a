"""Whole slides by the hundred: one folder per slide, a cohort table, resume, sharding.

``segmix predict`` sends slides here. Each slide is written to ``OUT/<slide stem>/`` (the
outputs of :func:`~segmix.infer.predict.predict_slide`); its ``_summary.json``, written last, marks
it done, so a re-run after a kill predicts only the slides that were not finished. A slide that
cannot be read is recorded (``OUT/<slide stem>/failed.json``) and the others go on; it is tried
again on the next run. Under torchrun / SLURM each process takes every world-th slide, so each
slide is written once; the first process writes ``OUT/cohort.csv`` when all are finished.

``cohort.csv`` has one row per slide: status (``done`` or the reason it failed), level, microns
per pixel, tissue area in mm^2, and per class mm^2 and % of tissue.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segmix.cam.run import rank_and_world
from segmix.config import Stage2Config
from segmix.data.io import csv_text, write_text
from segmix.data.spec import DatasetSpec
from segmix.errors import OutputError, first_line, user_message
from segmix.infer.predict import output_paths, predict_slide

COHORT_TABLE = "cohort.csv"
FAILED = "failed.json"


@dataclass(frozen=True)
class SlideJob:
    """Where one slide's outputs go."""

    slide: Path
    folder: Path

    @property
    def summary(self) -> Path:
        return output_paths(self.slide, self.folder)[-1]

    @property
    def done(self) -> bool:
        return self.summary.is_file()


def plan_cohort(slides: list[Path], out: Path) -> list[SlideJob]:
    """One job per slide, ``out/<stem>``; two slides of one name are refused before any work."""
    jobs: dict[str, SlideJob] = {}
    for slide in slides:
        stem = slide.stem
        if stem in jobs:
            raise OutputError(f"{slide} and {jobs[stem].slide} would both write {out / stem}; rename one")
        jobs[stem] = SlideJob(slide, out / stem)
    return list(jobs.values())


def predict_cohort(
    model,
    cfg: Stage2Config,
    spec: DatasetSpec,
    slides: list[Path],
    out: str | Path,
    on_slide: Callable[[SlideJob, str], None] | None = None,
    **slide_args,
) -> Path:
    """Predict every slide not done yet (this process's share), then write the cohort table.

    Args:
        slide_args: passed to :func:`predict_slide` (``level``, ``mpp``, ``overlap``,
            ``batch_size``, ``device``, ``on_tiles``).
        on_slide: called with each job and what happened (``done``, ``skipped``, or the
            failure's reason).

    Returns:
        the cohort table's path (written by the first process).
    """
    out = Path(out)
    jobs = plan_cohort(slides, out)
    rank, world = rank_and_world()
    for job in jobs[rank::world]:
        status = "skipped" if job.done else _predict_one(model, cfg, spec, job, slide_args)
        if on_slide:
            on_slide(job, status)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    table = out / COHORT_TABLE
    if rank == 0:
        write_text(table, csv_text(cohort_rows(jobs, spec)))
    return table


def _predict_one(model, cfg: Stage2Config, spec: DatasetSpec, job: SlideJob, slide_args: dict) -> str:
    (job.folder / FAILED).unlink(missing_ok=True)
    try:
        predict_slide(model, cfg, spec, job.slide, job.folder, **slide_args)
    except Exception as err:  # an unreadable slide (any reader's error): recorded, the cohort goes on
        reason = user_message(err) or f"{type(err).__name__}: {first_line(err)}"
        write_text(job.folder / FAILED, json.dumps({"slide": str(job.slide), "reason": reason}))
        return reason
    return "done"


def cohort_rows(jobs: list[SlideJob], spec: DatasetSpec) -> list[dict]:
    """One row per slide from the outputs on disk (done, failed, or not run yet)."""
    return [_row(job, spec) for job in jobs]


def _row(job: SlideJob, spec: DatasetSpec) -> dict:
    row: dict = {"slide": str(job.slide), "status": "not run", "level": "", "mpp_level0": "", "tissue_mm2": ""}
    for name in spec.classes:
        row[f"{name}_mm2"] = row[f"{name}_percent"] = ""
    failed = job.folder / FAILED
    if job.done:
        summary = json.loads(job.summary.read_text())
        areas = {r["class"]: r for r in csv.DictReader(output_paths(job.slide, job.folder)[2].open())}
        row.update(status="done", level=summary["level"], mpp_level0=summary["mpp_level0"] or "")
        tissue = [areas[c]["area_mm2"] for c in spec.classes]
        row["tissue_mm2"] = round(sum(float(a) for a in tissue), 6) if all(tissue) else ""
        for name in spec.classes:
            row[f"{name}_mm2"], row[f"{name}_percent"] = areas[name]["area_mm2"], areas[name]["percent_of_tissue"]
    elif failed.is_file():
        row["status"] = "failed: " + json.loads(failed.read_text())["reason"]
    return row
