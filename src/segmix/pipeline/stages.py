"""``segmix run``: dataset -> stage 1 -> pseudo masks -> stage 2 (-> relabel rounds) -> evaluate -> report.

Each stage writes into its own folder of the run directory. Its identity is a hash of its own
config chained with the hashes of the stages it reads from, so changing ``stage1`` also
invalidates ``cams``, ``stage2``... but not ``supervised``. Markers:

- ``<stage>/.started.json`` (hash): written when a stage starts. A re-run with the same hash
  resumes it (training stages from ``checkpoints/last.ckpt``); with another hash the old folder
  is moved aside to ``<stage>.stale-<hash>`` (never deleted) and the stage starts afresh.
- ``<stage>/.done.json`` (hash, seconds, metrics): written last, atomically. A re-run with the
  same hash skips the stage.

Relabel rounds (``relabel/round<r>``, and the maps each starts with, ``relabel/round<r>/maps``)
are stages of this same protocol inside the ``relabel`` stage (:func:`_once`).

``metrics.json`` in the run folder gathers the stages' metrics (fractions in [0, 1]).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from segmix.config import save_config
from segmix.config.run import RunConfig
from segmix.config.stages import PLACEMENT_KEYS
from segmix.data.dataset import TileDataset
from segmix.data.io import prepare_output_dir, write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import ConfigError, OutputError
from segmix.models import CLASSIFIER_FILE, SEGMENTER_FILE
from segmix.pipeline.layout import read_json, run_segmenter

console = Console(stderr=True)
STAGES = ("data", "stage1", "cams", "stage2", "relabel", "supervised", "evaluate", "report")


def _hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Context:
    cfg: RunConfig
    run_dir: Path
    progress: bool = True
    data_root: Path | None = None
    spec: DatasetSpec | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def summary(self) -> dict:
        """What ``metrics.json`` holds: the stages' metrics and their seconds."""
        return {**self.metrics, "seconds": self.seconds}


def has_train_truth(data_root: Path, spec: DatasetSpec) -> bool:
    """Whether the dataset has true masks of its train tiles (the synthetic ``train_gt/``)."""
    return bool(spec.splits.train_gt) and (data_root / spec.splits.train_gt).is_dir()


def train_supervised(
    cfg: RunConfig, data_root: Path, spec: DatasetSpec, out: Path, progress: bool, claim: bool = False
) -> Path | None:
    """Stage 2 trained on the true train masks: the fully supervised reference (None without them)."""
    from segmix.train import train_segmenter

    if not has_train_truth(data_root, spec):
        return None
    gt = data_root / spec.splits.train_gt
    return train_segmenter(cfg.stage2, data_root, gt, out, spec, progress, claim=claim, truth=True)


def evaluate_model(cfg: RunConfig, model_file: Path, data_root: Path, out: Path, overlays: int):
    """A stage-2 model file scored under the config's ``evaluate`` settings."""
    from segmix.eval import evaluate

    e = cfg.evaluate
    return evaluate(model_file, data_root, e.split, out, e.stride, e.flip, overlays, precision=e.precision)


def _stage_hash(ctx: Context, name: str) -> str:
    c = ctx.cfg
    h = ctx.hashes
    parts = {
        "data": lambda: (
            c.synth.model_dump() if c.data is None else {"data": str(Path(c.data).resolve()), "preset": c.preset}
        ),
        "stage1": lambda: (h["data"], c.stage1.model_dump(exclude=PLACEMENT_KEYS), c.mpp),
        "cams": lambda: (h["stage1"], c.cams.model_dump(exclude={"num_workers", "threads"})),
        "stage2": lambda: (h["cams"], c.stage2.model_dump(exclude=PLACEMENT_KEYS), c.mpp),
        "relabel": lambda: (h["stage2"], c.relabel.model_dump()),
        "supervised": lambda: (h["data"], c.stage2.model_dump(exclude=PLACEMENT_KEYS), c.fully_supervised, c.mpp),
        "evaluate": lambda: (h["relabel"], h["supervised"], c.evaluate.model_dump()),
        "report": lambda: (h["evaluate"], h["cams"], c.report.model_dump()),
    }[name]()
    return _hash(name, parts)


# ---------------------------------------------------------------------------------------------
# The stages: each takes the context and returns the metrics it contributes
# ---------------------------------------------------------------------------------------------
def run_data(ctx: Context) -> dict:
    from segmix.data.synth import generate

    if ctx.cfg.data is None:
        generate(ctx.cfg.synth, ctx.dir("data"))
    return {}


def run_stage1(ctx: Context) -> dict:
    from segmix.train import train_classifier

    # The stage's hash (chained from the data's) already decided that this folder is this run.
    train_classifier(ctx.cfg.stage1, ctx.data_root, ctx.dir("stage1"), ctx.spec, progress=ctx.progress, claim=False)
    return {}


def run_cams(ctx: Context) -> dict:
    from segmix.pseudo import generate_pseudo_masks

    classifier = ctx.dir("stage1") / CLASSIFIER_FILE
    scores = generate_pseudo_masks(classifier, ctx.data_root, ctx.dir("cams"), ctx.cfg.cams, ctx.spec)
    if scores is None:
        return {}
    return {"pseudo_masks": {**_scores(scores), "left_out": scores.left_out, "kept_accuracy": scores.kept_accuracy}}


def run_stage2(ctx: Context) -> dict:
    _train_stage2(ctx, ctx.dir("cams") / "masks", ctx.dir("stage2"))
    return _best_epoch("stage2", ctx.dir("stage2"))


def _train_stage2(ctx: Context, masks: Path, out: Path) -> None:
    from segmix.train import train_segmenter

    cfg = ctx.cfg.stage2
    train_segmenter(cfg, ctx.data_root, masks, out, ctx.spec, ctx.progress, claim=False)


def run_relabel(ctx: Context) -> dict:
    """``relabel.rounds`` rounds, each a stage of its own under the pipeline's markers and hashes
    (chained from the stage or round before it): ``relabel/round<r>`` trains a fresh stage 2 on
    the masks of its first step, ``relabel/round<r>/maps`` (the previous segmenter's label-gated
    predictions on the training tiles). The last round's model is linked as
    ``relabel/segmenter.pt``, the run's final model."""
    model, h, metrics = ctx.dir("stage2") / SEGMENTER_FILE, ctx.hashes["relabel"], {}
    for r in range(1, ctx.cfg.relabel.rounds + 1):
        h = _hash(f"round{r}", h)
        folder = ctx.dir("relabel") / f"round{r}"
        metrics[f"round{r}"], _ = _once(folder, f"relabel · round {r}", h, lambda: _round(ctx, model, folder, h))
        model = folder / SEGMENTER_FILE
    if metrics:
        _link_or_copy(model, ctx.dir("relabel") / SEGMENTER_FILE)
    return {"relabel": metrics} if metrics else {}


def _round(ctx: Context, segmenter: Path, folder: Path, h: str) -> dict:
    """One relabel round in ``folder``: its maps (a step that a resumed round keeps when done),
    then stage 2 on them (resumed from its checkpoint)."""
    from segmix.pseudo import relabel_masks

    def maps() -> dict:
        cfg = ctx.cfg
        scores = relabel_masks(segmenter, ctx.data_root, folder / "maps", cfg.cams, ctx.spec, scales=cfg.relabel.scales)
        return {"masks": scores.as_dict() if scores else {}}

    step = f"relabel · round {folder.name.removeprefix('round')}: maps of {segmenter.parent.name}'s segmenter"
    masks, maps_seconds = _once(folder / "maps", step, _hash("maps", h), maps)
    t0 = time.perf_counter()
    _train_stage2(ctx, folder / "maps" / "masks", folder)
    seconds = {"maps": maps_seconds, "stage2": round(time.perf_counter() - t0, 2)}
    return {**masks, "stage2": read_json(folder / "best.json") or {}, "seconds": seconds}


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` (a copy where the file system has none), atomically."""
    tmp = target.with_name(f".tmp-{target.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def run_supervised(ctx: Context) -> dict:
    if ctx.cfg.fully_supervised:
        train_supervised(ctx.cfg, ctx.data_root, ctx.spec, ctx.dir("supervised"), ctx.progress)
        return _best_epoch("supervised", ctx.dir("supervised"))
    return {}


def _best_epoch(name: str, folder: Path) -> dict:
    """``{name: {"epoch", "val_miou"}}``: the exported model's epoch (stage 2 keeps the best one)."""
    best = read_json(folder / "best.json")
    return {name: best} if best else {}


def run_evaluate(ctx: Context) -> dict:
    out = {}
    weak = evaluate_model(
        ctx.cfg,
        run_segmenter(ctx.run_dir),
        ctx.data_root,
        ctx.dir("evaluate") / "weak",
        ctx.cfg.evaluate.overlays,
    )
    out["test"] = _scores(weak, with_dice=True)
    full = ctx.dir("supervised") / SEGMENTER_FILE
    if full.is_file():
        sup = evaluate_model(ctx.cfg, full, ctx.data_root, ctx.dir("evaluate") / "supervised", 0)
        out["fully_supervised"] = _scores(sup, with_dice=True)
        if sup.miou > 0:
            out["test"]["ratio_to_fully_supervised"] = weak.miou / sup.miou
    return out


def run_report(ctx: Context) -> dict:
    from segmix.pipeline.report import write_report

    write_report(ctx)
    return {}


STAGE_RUNNERS: dict[str, Callable[[Context], dict]] = {
    "data": run_data,
    "stage1": run_stage1,
    "cams": run_cams,
    "stage2": run_stage2,
    "relabel": run_relabel,
    "supervised": run_supervised,
    "evaluate": run_evaluate,
    "report": run_report,
}


def _scores(scores, with_dice: bool = False) -> dict:
    d = scores.as_dict()
    keep = {"miou": d["miou"], "fwiou": d["fwiou"], "per_class": d["per_class"]}
    if with_dice:
        keep.update(dice=d["dice"], pixel_accuracy=d["pixel_accuracy"], per_class_dice=d["per_class_dice"])
    return keep


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def check_writable(folder: Path) -> None:
    """Fail before the long work when the run folder cannot be written or its disk is full."""
    prepare_output_dir(folder, "run folder")
    free = shutil.disk_usage(folder).free
    if free < 200 * 2**20:
        raise OutputError(f"{folder}: only {free // 2**20} MiB free on the disk of the run folder (need >= 200 MiB)")


def _resolve_data(ctx: Context) -> None:
    if ctx.cfg.data is None:
        ctx.data_root = ctx.dir("data")
    else:
        ctx.data_root = Path(ctx.cfg.data)
    if ctx.data_root.is_dir() and ((ctx.data_root / "dataset.yaml").is_file() or ctx.cfg.data is not None):
        ctx.spec = resolve_spec(ctx.data_root, ctx.cfg.preset)
        if ctx.cfg.mpp is not None:
            ctx.spec = ctx.spec.model_copy(update={"mpp": ctx.cfg.mpp})


def run_pipeline(
    cfg: RunConfig,
    run_dir: str | Path,
    start: str | None = None,
    until: str | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the pipeline; returns the content of ``metrics.json``.

    Args:
        start: re-run from this stage on, even where done (its old folders are moved aside).
        until: stop after this stage.
    """
    _check_stage_names(start, until)
    cfg = cfg.seeded()
    _refuse_multiprocess(cfg)
    run_dir = Path(run_dir)
    check_writable(run_dir)
    save_config(cfg, run_dir / "config.yaml")
    ctx = Context(cfg, run_dir, progress)
    _resolve_data(ctx)
    forced = False
    for i, name in enumerate(STAGES):
        forced = forced or name == start
        _stage(ctx, name, forced)
        if name == until:
            _keep_done_metrics(ctx, STAGES[i + 1 :])
        write_text(run_dir / "metrics.json", json.dumps(ctx.summary(), indent=2))
        if name == until:
            break
    return ctx.summary()


def _keep_done_metrics(ctx: Context, later: tuple[str, ...]) -> None:
    """Stopping early (``--until``): the metrics of the later stages that are still done with
    this config stay in ``metrics.json`` (a later run would skip them too)."""
    for name in later:
        h = ctx.hashes[name] = _stage_hash(ctx, name)
        done = read_json(ctx.dir(name) / ".done.json")
        if done and done.get("hash") == h:
            ctx.metrics.update(done.get("metrics", {}))
            ctx.seconds[name] = done.get("seconds", 0.0)


def _check_stage_names(start: str | None, until: str | None) -> None:
    for flag, name in (("--from", start), ("--until", until)):
        if name is not None and name not in STAGES:
            raise ConfigError(f"{flag} {name}: unknown stage; stages: {', '.join(STAGES)}")
    if start is not None and until is not None and STAGES.index(start) > STAGES.index(until):
        raise ConfigError(
            f"--from {start} comes after --until {until}: no stage would run; stages: {', '.join(STAGES)}"
        )


def _refuse_multiprocess(cfg: RunConfig) -> None:
    for name, stage in (("stage1", cfg.stage1), ("stage2", cfg.stage2)):
        if "ddp" in stage.strategy or stage.num_nodes > 1:
            # Lightning's DDP launcher re-runs the command line in every child: the stage commands
            # (train-cls, cams, train-seg) are built for that, the whole pipeline is not.
            raise ConfigError(
                f"{name}.strategy={stage.strategy!r}: run multi-process training with the stage commands "
                "(segmix train-cls / cams / train-seg, see README 'Several GPUs and nodes'), not segmix run"
            )


def _stage(ctx: Context, name: str, forced: bool) -> None:
    """Skip the stage when done with its hash (and not forced), else run it afresh or resume it."""
    if name != "data" and ctx.spec is None:
        _resolve_data(ctx)
    if name == "stage1":  # fail fast on a bad dataset before hours of training
        TileDataset(ctx.data_root, "train", ctx.spec, with_masks=False)
    h = ctx.hashes[name] = _stage_hash(ctx, name)
    metrics, ctx.seconds[name] = _once(ctx.dir(name), name, h, lambda: STAGE_RUNNERS[name](ctx), forced)
    ctx.metrics.update(metrics)
    if name == "data":
        _resolve_data(ctx)


def _once(folder: Path, name: str, h: str, run: Callable[[], dict], forced: bool = False) -> tuple[dict, float]:
    """The resume protocol of every stage and relabel round: ``run()``'s metrics and seconds,
    read from ``folder/.done.json`` when it holds hash ``h`` (and not ``forced``); else ``run()``
    in ``folder`` (moved aside first when its ``.started.json`` holds another hash, or none)."""
    done = read_json(folder / ".done.json")
    if done and done.get("hash") == h and not forced:
        console.print(f"[dim]{name}: done, skipped[/]")
        return done.get("metrics", {}), done.get("seconds", 0.0)
    started = read_json(folder / ".started.json")
    if folder.exists() and (forced or not started or started.get("hash") != h):
        _move_aside(folder, (started or {}).get("hash", "unknown"))
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / ".started.json", json.dumps({"hash": h}))
    console.rule(f"[bold]{name}")
    t0 = time.perf_counter()
    metrics = run()
    seconds = round(time.perf_counter() - t0, 2)
    write_text(folder / ".done.json", json.dumps({"hash": h, "seconds": seconds, "metrics": metrics}))
    return metrics, seconds


def _move_aside(folder: Path, old_hash: str) -> None:
    """Keep the outputs of another config (never deleted): ``<stage>.stale-<hash>``, or
    ``<stage>.stale-<hash>.<n>`` when an earlier move (``--from`` twice) took that name."""
    stale = folder.with_name(f"{folder.name}.stale-{old_hash}")
    n = 2
    while stale.exists():
        stale, n = folder.with_name(f"{folder.name}.stale-{old_hash}.{n}"), n + 1
    os.replace(folder, stale)
    console.print(f"[yellow]{folder.name}: earlier outputs moved to {stale.name}[/]")
