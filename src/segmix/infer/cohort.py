"""Whole slides by the hundred: one folder per slide, a cohort table, resume, sharding.

``segmix predict`` sends slides here. Each slide is written to ``OUT/<slide stem>/`` (the
outputs of :func:`~segmix.infer.predict.predict_slide`) with a record of the request
(:mod:`segmix.infer.records`: the slide file's size and time, model fingerprint, precision,
level, microns per pixel, overlap). A slide is done when its outputs, ``_summary.json`` last,
are on disk as written for the same request: a re-run after a kill predicts only the slides not
finished, and a re-run with another model, precision, level or resolution, a slide file
replaced, or an output deleted, predicts them again. A slide that cannot be predicted (it cannot
be read, lacks the level asked for, records no resolution to read it at) is recorded
(``OUT/<slide stem>/failed.json``, its reason in ``cohort.csv``) and the others go on; it is tried
again on the next run. Under torchrun / SLURM each process takes every world-th slide, so each
slide is written once; the first process writes ``OUT/cohort.csv`` when all are finished.

``cohort.csv`` has one row per slide ever predicted into ``OUT`` (this run's and earlier runs'):
status (``done`` or the reason it failed), the model's fingerprint, level, microns per pixel at
level 0 and as read, tissue area in mm^2, and per class mm^2 and % of tissue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from segmix.config import Stage2Config
from segmix.config.precision import resolve_precision
from segmix.data.io import write_text
from segmix.data.spec import DatasetSpec
from segmix.data.text import csv_text, read_csv
from segmix.errors import OutputError, first_line, user_message
from segmix.infer.inputs import COHORT_TABLE, output_folder, output_name, output_paths
from segmix.infer.predict import predict_slide, read_mpp
from segmix.infer.records import input_identity, read_record, refuse_foreign, same_request, sealed
from segmix.models.inference import model_fingerprint
from segmix.runtime import rank_and_world

FAILED = "failed.json"


@dataclass(frozen=True)
class SlideJob:
    """Where one slide's outputs go."""

    slide: Path
    folder: Path

    @property
    def name(self) -> str:
        return output_name(self.slide)

    @property
    def source(self) -> str:
        return str(self.slide.resolve())

    @property
    def summary(self) -> Path:
        return output_paths(self.slide, self.folder)["summary"]

    @property
    def targets(self) -> list[Path]:
        """Every file the job may write: the slide's outputs and its failure record."""
        return [*output_paths(self.slide, self.folder).values(), self.folder / FAILED]

    def request(self, cohort_request: dict) -> dict:
        """The cohort's request for this slide file (its size and time: a slide replaced by
        another of the same name is not the one predicted)."""
        return {**cohort_request, "input": input_identity(self.slide)} if self.slide.is_file() else cohort_request

    def done(self, request: dict) -> bool:
        """Whether the outputs on disk answer ``request`` (see the module doc)."""
        return same_request(self.folder, self.name, self.source, request, self.summary)


def plan_cohort(slides: list[Path], out: Path) -> list[SlideJob]:
    """One job per slide, ``out/<stem>``, refused before any work when two slides share a name,
    the folder is a file, or a file there is not segmix's output for that slide
    (:func:`~segmix.infer.records.refuse_foreign`).

    Raises:
        OutputError: naming the slides or the file.
    """
    jobs: dict[str, SlideJob] = {}
    for slide in slides:
        job = SlideJob(slide, output_folder(slide, out))
        if job.name in jobs:
            raise OutputError(f"{slide} and {jobs[job.name].slide} would both write {job.folder}; rename one")
        if job.folder.exists() and not job.folder.is_dir():
            raise OutputError(f"{job.folder}: the outputs of {slide} go in a folder of this name, and it is a file")
        refuse_foreign(job.targets, job.name, job.source)
        jobs[job.name] = job
    if jobs:  # images alone write no cohort table
        table = out / COHORT_TABLE
        refuse_foreign([table], table.name, str(out.resolve()))
    return list(jobs.values())


def slide_request(
    model, spec: DatasetSpec, level: int | None = None, mpp: float | None = None, precision: str = "auto", **slide_args
) -> dict:
    """What makes a slide's outputs: the model's weights and classes, the precision it computes
    at, the level or the microns per pixel read at, the tiles' overlap, the quick look's size,
    whether probabilities are written and the polygons' simplification."""
    device = torch.device(slide_args.get("device", "cpu"))
    return {
        "model": model_fingerprint(model),
        "precision": resolve_precision(precision, device.type),
        "level": level,
        "mpp": read_mpp(spec, level, mpp),
        "overlap": slide_args.get("overlap", 0.25),
        "map_size": slide_args.get("map_size", 2048),
        "probs": slide_args.get("probs", False),
        "simplify_um": slide_args.get("simplify_um", 1.0),
        "classes": list(spec.classes),
    }


def predict_cohort(
    model,
    cfg: Stage2Config,
    spec: DatasetSpec,
    slides: list[Path],
    out: str | Path,
    on_slide: Callable[[SlideJob, str], None] | None = None,
    **slide_args,
) -> Path:
    """Predict every slide not done yet for this request (this process's share), then write the
    cohort table.

    Args:
        slide_args: passed to :func:`predict_slide` (``level``, ``mpp``, ``overlap``,
            ``batch_size``, ``device``, ``on_tiles``, ``map_size``, ``probs``, ``simplify_um``).
        on_slide: called with each job and what happened (``done``, ``skipped``, or the
            failure's reason).

    Returns:
        the cohort table's path (written by the first process).
    """
    out = Path(out)
    jobs = plan_cohort(slides, out)
    request = slide_request(model, spec, precision=cfg.precision, **slide_args)
    rank, world = rank_and_world()
    for job in jobs[rank::world]:
        ask = job.request(request)
        status = "skipped" if job.done(ask) else _predict_one(model, cfg, spec, job, ask, slide_args)
        if on_slide:
            on_slide(job, status)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    table = out / COHORT_TABLE
    if rank == 0:
        with sealed([table], table.name, str(out.resolve()), {}):
            write_text(table, cohort_table(out, spec))
    return table


def _predict_one(model, cfg: Stage2Config, spec: DatasetSpec, job: SlideJob, request: dict, slide_args: dict) -> str:
    with sealed(job.targets, job.name, job.source, request):
        # The summary and failure record among them: a kill before the new summary leaves the slide
        # not done; an earlier request's outputs that this one may not write (probabilities) go.
        for target in job.targets:
            target.unlink(missing_ok=True)
        for stale in job.folder.glob(".tmp-*"):  # outputs a killed run left half-written (mkstemp's names)
            if re.fullmatch(r"\.tmp-\w{8}\.(tif|png|csv|geojson|json)", stale.name) and stale.is_file():
                stale.unlink()
        try:
            predict_slide(model, cfg, spec, job.slide, job.folder, **slide_args)
        except Exception as err:  # an unreadable slide, a level or resolution it lacks: recorded, the cohort goes on
            reason = user_message(err) or f"{type(err).__name__}: {first_line(err)}"
            write_text(job.folder / FAILED, json.dumps({"slide": str(job.slide), "reason": reason}))
            return reason
    return "done"


def cohort_table(out: Path, spec: DatasetSpec) -> str:
    """CSV text of every slide folder in ``out`` that segmix wrote (see the module doc); class
    columns of ``spec`` first, then those of slides predicted with models of other classes."""
    rows = [_row(folder, record) for folder, record in _slide_records(out)]
    classes = list(spec.classes) + sorted({c for r in rows for c in r.pop("_classes")} - set(spec.classes))
    fields = ["slide", "status", "model", "level", "mpp_level0", "mpp_read", "tissue_mm2"]
    fields += [f"{c}_{unit}" for c in classes for unit in ("mm2", "percent")]
    return csv_text(rows, fields) if rows else ",".join(fields) + "\n"


def _slide_records(out: Path) -> list[tuple[Path, dict]]:
    found = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        record = read_record(folder, folder.name)
        if record is not None and "model" in record.get("request", {}):
            found.append((folder, record))
    return found


def _row(folder: Path, record: dict) -> dict:
    slide = Path(record["input"])
    request = record["request"]
    row: dict = {"slide": str(slide), "status": "not finished", "model": request["model"][:12], "_classes": []}
    paths = output_paths(slide, folder)
    areas_path, summary = paths["areas"], paths["summary"]
    failed = folder / FAILED
    if failed.is_file():
        row["status"] = "failed: " + json.loads(failed.read_text())["reason"]
    elif summary.is_file() and areas_path.is_file():
        summary_data = json.loads(summary.read_text())
        row.update(status="done", level=summary_data["level"], mpp_level0=summary_data["mpp_level0"] or "")
        row["mpp_read"] = summary_data.get("mpp_read") or ""
        classes = request["classes"]
        areas = [r for r in read_csv(areas_path) if r["class"] in classes]
        row["_classes"] = classes
        tissue = [r["area_mm2"] for r in areas]
        row["tissue_mm2"] = round(sum(float(a) for a in tissue), 6) if all(tissue) else ""
        for r in areas:
            row[f"{r['class']}_mm2"], row[f"{r['class']}_percent"] = r["area_mm2"], r["percent_of_tissue"]
    return row
