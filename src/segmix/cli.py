"""``segmix`` command line: one sub-command per pipeline step.

Every command runs inside :func:`_guarded`, the one place where errors meet the user: a
:class:`~segmix.errors.UserError` (bad dataset, config, output folder, model file; also when
raised in a DataLoader worker) prints one line and exits with code 2; anything else is a bug and
prints one line asking for a report (exit 1), or its traceback with ``-v`` / ``SEGMIX_DEBUG=1``.
Writing commands check their output folder (:func:`segmix.data.io.prepare_output_dir`) before
any work. Normal runs print segmix's progress and results only; ``-v`` (before or after the
sub-command) shows library logs and warnings too.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from segmix.data.io import MAX_PIXELS_ENV, prepare_output_dir, prepare_output_file
from segmix.errors import ConfigError, user_message, validation_problems

app = typer.Typer(
    help="segmix: pixel-level tissue maps of H&E images from image-level labels.",
    no_args_is_help=True,
    rich_markup_mode=None,  # typer's rich help shows a rejected <bool> placeholder beside flags
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show configs: every key `--set` accepts, with its value.", no_args_is_help=True)
app.add_typer(config_app, name="config")
# soft_wrap: a message is one line however long, as scripts and log readers expect.
console = Console(stderr=True, soft_wrap=True)
DEBUG_ENV = "SEGMIX_DEBUG"
_global = {"verbose": False}
_show_warning = warnings.showwarning


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,  # a stopped bar is not left behind: an error stays the only line
    )


def _say(message: str, style: str | None = None, prefix: str = "") -> None:
    """Print to stderr with no markup parsing: file names like ``x-[1 0].png`` stay as they are."""
    console.print(Text.assemble((prefix, style or ""), message))


def _drop_warning(*args, **kwargs) -> None:
    return None


def _set_verbosity(verbose: bool) -> None:
    """Quiet: our progress and results, warnings we log. Verbose: library logs and warnings too."""
    level = logging.DEBUG if verbose else logging.WARNING
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "segmix", False)]:
        root.removeHandler(handler)
    handler = RichHandler(console=console, show_path=False, show_time=False, level=level, markup=False)
    handler.segmix = True
    if not verbose:  # libraries' own lines (tifffile's decode errors, hub retries) only with -v
        handler.addFilter(lambda record: record.name.split(".")[0] == "segmix")
    # huggingface_hub prints through a handler of its own, at the level this variable gives when
    # it is imported (inside the commands): its retry warnings are noise in a normal run.
    if not verbose:
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    root.addHandler(handler)
    root.setLevel(level)
    # Lightning sets its own loggers to INFO when imported (inside the commands, after this):
    # a global floor is the only setting that holds for them.
    logging.disable(logging.NOTSET if verbose else logging.INFO)
    # Library warnings (deprecations, tips) are for developers; forked workers inherit this.
    warnings.showwarning = _show_warning if verbose else _drop_warning


def _debug(verbose: bool) -> bool:
    return verbose or _global["verbose"] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _guarded(fn, verbose: bool, args, kwargs):
    debug = _debug(verbose)
    saved = (logging.root.manager.disable, warnings.showwarning)
    _set_verbosity(debug)
    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, *_click_exceptions("Exit"), *_click_exceptions("ClickException")):
        raise
    except Exception as err:
        message = user_message(err)
        if debug:
            traceback.print_exc()
        if message is not None:
            _say(message, "bold red", "error: ")
            raise typer.Exit(2) from None
        if debug:
            raise typer.Exit(1) from None
        first = (str(err).strip().splitlines() or [""])[0]
        _say(
            f"{type(err).__name__}: {first} -- this is a bug in segmix; run again with -v (or {DEBUG_ENV}=1) "
            "to see the traceback, and report it",
            "bold red",
            "internal error: ",
        )
        raise typer.Exit(1) from None
    finally:
        logging.disable(saved[0])
        warnings.showwarning = saved[1]


class _Command(typer.core.TyperCommand):
    """Help in click's words: ``segmix run [OPTIONS] CONFIG`` and ``INPUT... PATH...``, not
    typer's ``{config}`` and ``<list[Path]>`` placeholders."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name).upper()
                name += "..." if param.nargs != 1 and not name.endswith("...") else ""
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        start = len(formatter.buffer)
        super().format_options(ctx, formatter)
        formatter.buffer[start:] = [
            re.sub(r"<list\[(\w+)\]>", lambda m: f"{m.group(1).upper()}...", line) for line in formatter.buffer[start:]
        ]


def _click_exceptions(name: str) -> tuple[type, ...]:
    """click's exception class ``name`` as the installed typer raises it: click's own, and the
    copy of click that typer >= 0.2x carries (``typer._click``)."""
    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored

        modules.append(vendored)
    except ImportError:
        pass
    return tuple(getattr(m, name) for m in modules if hasattr(m, name))


def main() -> None:
    """The ``segmix`` command. A usage error (an option value out of range, a missing option, an
    unknown command) is one ``error:`` line and exit 2, like every other user error."""
    try:
        code = app(prog_name="segmix", standalone_mode=False)
    except _click_exceptions("NoArgsIsHelpError") as err:  # no arguments: the help
        err.show()
        sys.exit(2)
    except _click_exceptions("UsageError") as err:
        where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
        _say(f"{where}{err.format_message()} (see --help)", "bold red", "error: ")
        sys.exit(2)
    except _click_exceptions("Abort"):
        _say("aborted", "bold red", "error: ")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _command(name: str | None = None, group: typer.Typer = app):
    """Register ``fn`` as a command run by :func:`_guarded`, with its own ``-v`` option (so
    ``segmix -v CMD`` and ``segmix CMD -v`` both work)."""

    def register(fn):
        sig = inspect.signature(fn, eval_str=True)
        verbose = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Verbose)

        @functools.wraps(fn)
        def wrapper(*args, verbose: bool = False, **kwargs):
            return _guarded(fn, verbose, args, kwargs)

        wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), verbose])
        wrapper.__annotations__ = {**{p.name: p.annotation for p in sig.parameters.values()}, "verbose": Verbose}
        group.command(name, cls=_Command)(wrapper)
        return fn

    return register


# Options shared by several commands: declared once, with one help text.
DataDir = Annotated[Path, typer.Option("--data", "-d", help="Dataset root folder.")]
RunDir = Annotated[
    Path, typer.Option("--out", "-o", help="Run folder (resumed when it holds a run of the same config).")
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder (made when missing).")]
ConfigFile = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML config (every key: segmix config show).")
]
Overrides = Annotated[
    list[str],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key, dotted for sections; repeatable (every key: segmix config show).",
    ),
]
Preset = Annotated[
    Optional[str], typer.Option(help="Dataset preset: luad-histoseg, bcss-wsss or wsss4luad (default: detect).")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs, warnings and tracebacks.")]
Precision = Annotated[
    Optional[str],
    typer.Option(
        help="auto (bf16 where the device computes it natively, else fp32 / fp16 AMP), 32, 16 or bf16 "
        "(default: the model's own precision key, auto unless set)."
    ),
]


@app.callback()
def _main(
    verbose: Verbose = False,
    max_pixels: Annotated[
        Optional[int],
        typer.Option(
            "--max-pixels",
            min=1,
            help=f"Largest image (width x height) read as a tile [default: Pillow's 178956970; env {MAX_PIXELS_ENV}].",
        ),
    ] = None,
) -> None:
    _global["verbose"] = verbose  # each command's _guarded sets the verbosity from it
    if max_pixels is not None:
        os.environ[MAX_PIXELS_ENV] = str(max_pixels)  # read by the image reader, in workers too


def _configured(model, config: Optional[Path], overrides: list[str]):
    from segmix.config import load_config

    return load_config(model, config, overrides)


def _fail(message: str) -> NoReturn:
    raise ConfigError(message)


def _precision(value: Optional[str]) -> Optional[str]:
    """``--precision`` in its canonical name; a one-line error naming the flag."""
    from segmix.config.precision import precision_name

    try:
        return None if value is None else precision_name(value)
    except ValueError as err:
        _fail(f"--precision: {err}")


SYNTH_FLAGS = {
    "n_train": "--train",
    "n_val": "--val",
    "n_test": "--test",
    "tile_size": "--size",
    "stain_jitter": "--stain-jitter",
    "preset": "--preset",
    "classes": "--classes",
    "seed": "--seed",
}


@_command()
def synth(
    out: OutDir,
    n_train: Annotated[int, typer.Option("--train", help="Training tiles (image-level labels in names).")] = 800,
    n_val: Annotated[int, typer.Option("--val", help="Validation tiles with masks.")] = 100,
    n_test: Annotated[int, typer.Option("--test", help="Test tiles with masks.")] = 100,
    tile_size: Annotated[int, typer.Option("--size", help="Tile edge in pixels.")] = 112,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    classes: Annotated[str, typer.Option(help="Tissue classes, comma separated.")] = "TE,NEC,LYM,TAS",
    stain_jitter: Annotated[float, typer.Option(help="Per-tile stain variation, 0-1.")] = 0.25,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores).")] = None,
    sheet: Annotated[bool, typer.Option(help="Write contact_sheet.png.")] = True,
    preset: Annotated[
        str,
        typer.Option(help="Difficulty: default, or hard (mostly multi-label tiles, a rare class, closer textures)."),
    ] = "default",
) -> None:
    """Generate the synthetic H&E tissue benchmark (generic layout, exact pixel truth)."""
    from pydantic import ValidationError

    from segmix.data.preview import write_contact_sheet
    from segmix.data.synth import SynthConfig, generate

    names = [c.strip() for c in classes.split(",") if c.strip()]
    fields = dict(
        tile_size=tile_size,
        classes=names,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        stain_jitter=stain_jitter,
        preset=preset,
    )
    try:
        cfg = SynthConfig(**fields)
    except ValidationError as err:
        _fail("; ".join(validation_problems(err, SynthConfig, lambda key: SYNTH_FLAGS.get(key, key), show_key=False)))
    prepare_output_dir(out)
    total = cfg.n_train + cfg.n_val + cfg.n_test
    with _progress() as bar:
        task = bar.add_task("synthesising tiles", total=total)
        spec = generate(cfg, out, workers=workers, progress=lambda n: bar.advance(task, n))
    if sheet:
        write_contact_sheet(out, spec)
    _say(f"wrote {total} tiles to {out} (classes: {', '.join(spec.classes)})")


@_command()
def info(
    dataset: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    preset: Preset = None,
    check: Annotated[bool, typer.Option(help="Decode every image and list all problems.")] = False,
) -> None:
    """Summarise a dataset: per-split counts, label co-occurrence, pixel frequencies, sizes."""
    from segmix.data.spec import resolve_spec
    from segmix.data.summary import summarize

    spec = resolve_spec(dataset, preset)
    with _progress() as bar:
        task = bar.add_task("reading", total=None)
        splits = summarize(dataset, spec, check=check, on_file=lambda: bar.advance(task))
    out = Console(soft_wrap=True)
    out.print(Text.assemble((str(dataset), "bold"), f"  dataset: {spec.name}  classes: {', '.join(spec.classes)}"))
    out.print(_splits_table(splits))
    for s in splits:
        for table in _split_tables(s, spec):
            out.print(table)
        for problem in s.problems:
            out.print(Text.assemble(("problem: ", "red"), problem))
    if any(s.problems for s in splits):
        raise typer.Exit(1)


def _splits_table(splits) -> Table:
    counts = Table(title="splits")
    for col in ("split", "images", "skipped files", "sizes (WxH: count)"):
        counts.add_column(col)
    for s in splits:
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in s.sizes.most_common(4))
        if len(s.sizes) > 4:
            sizes += f", ... ({len(s.sizes)} sizes)"
        counts.add_row(s.name, str(s.images), str(s.skipped), sizes)
    return counts


def _split_tables(s, spec) -> list[Table]:
    """A split's label co-occurrence and mask pixel frequencies, where it has them."""
    tables = []
    if s.cooccurrence is not None and s.cooccurrence.any():
        t = Table(title=f"{s.name}: tiles carrying both labels (diagonal: the label)")
        t.add_column("")
        for c in spec.classes:
            t.add_column(c, justify="right")
        for i, c in enumerate(spec.classes):
            t.add_row(c, *[str(v) for v in s.cooccurrence[i]])
        tables.append(t)
    if s.pixels is not None:
        total = max(int(s.pixels.sum()), 1)
        t = Table(title=f"{s.name}: mask pixel frequencies")
        t.add_column("class")
        t.add_column("share", justify="right")
        for name, v in zip(spec.index_names, s.pixels):
            t.add_row(name, f"{v / total:.1%}")
        tables.append(t)
    return tables


@_command("train-cls")
def train_cls(
    data: DataDir, out: RunDir, config: ConfigFile = None, overrides: Overrides = [], preset: Preset = None
) -> None:
    """Stage 1: train the multi-label CAM classifier with the configured mixer and curriculum
    (keys: segmix config show stage1)."""
    from segmix.data.spec import resolve_spec
    from segmix.train import Stage1Config, train_classifier

    cfg = _configured(Stage1Config, config, overrides)
    spec = resolve_spec(data, preset)
    prepare_output_dir(out, "run folder")
    path = train_classifier(cfg, data, out, spec=spec)
    _say(f"classifier written to {path}")


@_command()
def cams(
    classifier: Annotated[
        Path,
        typer.Option("--classifier", "--model", help="classifier.pt from train-cls, or a folder of segmix export."),
    ],
    data: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (masks/ inside).")],
    config: ConfigFile = None,
    overrides: Overrides = [],
    preset: Preset = None,
) -> None:
    """Pseudo masks from CAMs (label-gated, background policy of the dataset); scored when truth
    exists (keys: segmix config show cams)."""
    from segmix.cam import CamConfig, generate_pseudo_masks
    from segmix.data.dataset import TileDataset
    from segmix.data.spec import resolve_spec

    cfg = _configured(CamConfig, config, overrides)
    spec = resolve_spec(data, preset)
    total = len(TileDataset(data, cfg.split, spec, with_masks=False))
    prepare_output_dir(out)
    with _progress() as bar:
        task = bar.add_task(f"pseudo masks ({cfg.split})", total=total)
        scores = generate_pseudo_masks(classifier, data, out, cfg, spec, on_batch=lambda n: bar.advance(task, n))
    _say(f"wrote {total} masks to {out / 'masks'}")
    if scores is not None:
        print_scores(scores, f"pseudo masks vs truth ({cfg.split})")


@_command("train-seg")
def train_seg(
    data: DataDir,
    masks: Annotated[
        Path, typer.Option("--masks", "-m", help="Folder of <image stem>.png training masks (pseudo or truth).")
    ],
    out: RunDir,
    config: ConfigFile = None,
    overrides: Overrides = [],
    preset: Preset = None,
) -> None:
    """Stage 2: train the segmentation network on pseudo masks (or truth: the upper bound)
    (keys: segmix config show stage2)."""
    from segmix.data.spec import resolve_spec
    from segmix.train import Stage2Config, train_segmenter

    cfg = _configured(Stage2Config, config, overrides)
    spec = resolve_spec(data, preset)
    prepare_output_dir(out, "run folder")
    path = train_segmenter(cfg, data, masks, out, spec=spec)
    _say(f"segmenter (best epoch by val mIoU) written to {path}")


@_command()
def evaluate(
    segmenter: Annotated[
        Path, typer.Option("--checkpoint", "--model", help="segmenter.pt from train-seg, or a folder of segmix export.")
    ],
    data: DataDir,
    split: Annotated[str, typer.Option(help="val or test.")] = "test",
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write scores, predictions, overlays here.")
    ] = None,
    stride: Annotated[Optional[float], typer.Option(help="Sliding-window stride, share of the window.")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Flip test-time augmentation.")] = None,
    precision: Precision = None,
) -> None:
    """Score a segmenter under the dataset's protocol: per-class IoU, mIoU, FwIoU, Dice, pixel accuracy."""
    from segmix.data.dataset import TileDataset
    from segmix.eval import evaluate as run_evaluate

    if split not in ("val", "test"):
        _fail(f"--split {split}: must be val or test")
    precision = _precision(precision)
    total = len(TileDataset(data, split))
    if out is not None:
        prepare_output_dir(out)
    with _progress() as bar:
        task = bar.add_task(f"evaluating ({split})", total=total)
        scores = run_evaluate(
            segmenter, data, split, out, stride, flip, precision=precision, on_batch=lambda n: bar.advance(task, n)
        )
    print_scores(scores, f"{segmenter.name} on {split}")


@_command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A segmix run folder, or a train-seg folder.")],
    out: OutDir,
) -> None:
    """A package of the run's models that needs no run: model.safetensors, config.json, a model card
    (README.md) and the stage-1 classifier in classifier/. Use it with predict / evaluate / cams --model."""
    from segmix.pipeline.export import export_run

    path = export_run(run_dir, out)
    _say(f"model package written to {path} (model card: {path / 'README.md'})")


@_command()
def predict(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT...",
            help="Images, folders of images or slides, whole slides (.svs, .tif, ...), or .txt lists of slides.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (best not an input folder: outputs never replace inputs)."),
    ],
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint",
            "--model",
            help="segmenter.pt from train-seg, or a folder of segmix export (this or --run is needed).",
        ),
    ] = None,
    run_dir: Annotated[
        Optional[Path],
        typer.Option("--run", help="A segmix run folder: uses its best stage-2 model (this or --checkpoint)."),
    ] = None,
    level: Annotated[Optional[int], typer.Option(help="Slides: pyramid level to predict at.")] = None,
    mpp: Annotated[
        Optional[float],
        typer.Option(
            help="Slides: microns per pixel to read at (default: the model's training resolution); the level at "
            "or finer than it, resampled."
        ),
    ] = None,
    overlap: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Slides: share of each tile shared with its neighbours.")
    ] = 0.25,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per forward pass.")] = 16,
    precision: Precision = None,
) -> None:
    """Segment images (mask, overlay, area CSV) and whole slides (class map, overlay, mm^2, GeoJSON).

    One of --checkpoint or --run names the model. Images: <input name>_mask.png, _overlay.png,
    _areas.csv in --out; inputs whose outputs would replace an input file or each other (two
    inputs of the same name) are refused before any work. Slides: one folder per slide in --out
    (_classmap.png, _overlay.png, _areas.csv, .geojson, _summary.json) and --out/cohort.csv; a
    re-run skips finished slides; an unreadable slide is recorded and the others go on (exit 1
    at the end). Under torchrun each process predicts every world-th slide.
    """
    from segmix.cam.run import rank_and_world
    from segmix.config.threads import fit_threads
    from segmix.infer import (
        check_resolution,
        check_slide_options,
        is_slide,
        output_paths,
        plan_cohort,
        plan_outputs,
        predict_image,
        prediction_inputs,
    )
    from segmix.infer.predict import read_mpp
    from segmix.infer.records import sealed
    from segmix.models import SEGMENTER_FILE, load_segmenter, pick_device
    from segmix.models.inference import model_fingerprint

    if checkpoint is None and run_dir is not None:
        checkpoint = run_dir / "stage2" / SEGMENTER_FILE
    if checkpoint is None:
        _fail("no model: pass --checkpoint segmenter.pt or --run RUN_DIR")
    precision = _precision(precision)
    files = prediction_inputs(inputs)
    slides = [f for f in files if is_slide(f)]
    plan_outputs(files, out)
    plan_cohort(slides, out)
    prepare_output_dir(out)
    model, cfg, spec = load_segmenter(checkpoint)
    cfg = cfg.model_copy(update={"precision": precision or cfg.precision})
    if slides:  # option errors, not one per slide, and before any work
        check_resolution(spec, mpp, level)
        check_slide_options(slides, level, read_mpp(spec, level, mpp))
    device = pick_device()
    fit_threads(0, None, gpu=device.type == "cuda")
    model = model.to(device)
    rank, world = rank_and_world()
    request = {"model": model_fingerprint(model)}
    for f in [f for f in files if not is_slide(f)][rank::world]:  # each process its share
        with sealed(output_paths(f, out), f.stem, str(f.resolve()), request):
            predict_image(model, cfg, spec, f, out, device)
        _say(f"{f}: done")
    if slides:
        slide_args = dict(level=level, mpp=mpp, overlap=overlap, batch_size=batch_size, device=device)
        _predict_slides(model, cfg, spec, slides, out, slide_args, rank, world)
    _say(f"outputs in {out}")


def _predict_slides(model, cfg, spec, slides: list[Path], out: Path, slide_args: dict, rank: int, world: int) -> None:
    """The slides as a cohort, with progress over this process's slides and the current slide's
    tiles; the first process reports the slides that could not be read (exit 1)."""
    import csv

    from segmix.infer import predict_cohort

    with _progress() as bar:
        over_slides = bar.add_task("slides", total=len(slides[rank::world]))
        tiles = bar.add_task("tiles", total=None)

        def slide_done(job, status: str) -> None:
            bar.advance(over_slides)
            bar.update(tiles, completed=0, total=None)
            _say(f"{job.slide}: {status}")

        table = predict_cohort(
            model,
            cfg,
            spec,
            slides,
            out,
            on_slide=slide_done,
            on_tiles=lambda done, total: bar.update(tiles, completed=done, total=total),
            **slide_args,
        )
    if rank != 0:
        return
    _say(f"cohort table: {table}")
    failed = [row for row in csv.DictReader(table.open()) if row["status"].startswith("failed")]
    if failed:
        _say(f"{len(failed)} of {len(slides)} slides could not be read (see {table.name})", "bold red", "error: ")
        raise typer.Exit(1)


def _run_config(config: Optional[Path], data: Optional[Path], overrides: list[str]):
    from segmix.pipeline import RunConfig

    extra = [f"data={data}"] if data is not None else []
    return _configured(RunConfig, config, extra + list(overrides))


PipelineConfig = Annotated[
    Path, typer.Argument(help="Pipeline YAML (see configs/; every key: segmix config show demo).")
]
PipelineData = Annotated[
    Optional[Path], typer.Option("--data", "-d", help="Dataset root (overrides the config's data).")
]


@_command()
def run(
    config: PipelineConfig,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder; re-running resumes and skips done stages.")
    ] = Path("runs/run"),
    data: PipelineData = None,
    overrides: Overrides = [],
    start: Annotated[Optional[str], typer.Option("--from", help="Re-run from this stage on.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this stage.")] = None,
) -> None:
    """The whole pipeline: (synthesise) -> stage 1 -> pseudo masks -> stage 2 -> evaluate -> report."""
    from segmix.pipeline import run_pipeline

    cfg = _run_config(config, data, overrides)
    metrics = run_pipeline(cfg, out, start, until)
    _print_run(metrics, out)


def _print_run(metrics: dict, out: Path) -> None:
    def pct(m):
        return f"{m['miou'] * 100:.1f}%" if m and m.get("miou") is not None else "–"

    _say(
        f"pseudo masks mIoU {pct(metrics.get('pseudo_masks'))} · test mIoU {pct(metrics.get('test'))} · "
        f"fully supervised {pct(metrics.get('fully_supervised'))}"
    )
    if (out / "report.html").is_file():
        _say(f"report: {out / 'report.html'}")


def _packaged_config(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("segmix") / "configs" / f"{name}.yaml"))


@_command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("demo-run"),
    overrides: Overrides = [],
) -> None:
    """Synthetic H&E benchmark end to end on the CPU (configs/demo.yaml), with report.html."""
    from segmix.pipeline import run_pipeline

    cfg = _run_config(_packaged_config("demo"), None, overrides)
    metrics = run_pipeline(cfg, out)
    _print_run(metrics, out)


@_command()
def ablate(
    config: PipelineConfig,
    methods: Annotated[
        str, typer.Option(help="Comma-separated mixing methods (segmix.shuffle.METHODS; e.g. none,segmix).")
    ] = "none,segmix",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per method (0..N-1).")] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (ablation.csv, ablation.md).")] = Path(
        "runs/ablation"
    ),
    data: PipelineData = None,
    overrides: Overrides = [],
) -> None:
    """Mixing methods x seeds through the pipeline; writes ablation.csv / ablation.md."""
    from segmix.pipeline import run_ablation
    from segmix.shuffle import METHODS

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names:
        _fail(f"--methods {methods!r}: names no method; known: {', '.join(METHODS)}")
    if unknown:
        _fail(f"--methods {methods}: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
    cfg = _run_config(config, data, overrides)
    prepare_output_dir(out)
    run_ablation(cfg, names, seeds, out)
    Console().print(Text((out / "ablation.md").read_text()))


@_command("score-masks")
def score_masks_cmd(
    pred_dir: Annotated[Path, typer.Argument(help="Folder of predicted palette PNG masks.")],
    gt_dir: Annotated[Path, typer.Argument(help="Folder of truth masks with the same file names.")],
    dataset: Annotated[
        Optional[Path], typer.Option(help="Dataset root whose description gives the classes (this or --preset).")
    ] = None,
    preset: Annotated[
        Optional[str], typer.Option(help="Preset giving the classes: luad-histoseg, bcss-wsss, wsss4luad.")
    ] = None,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the scores as JSON (folders are made).")
    ] = None,
) -> None:
    """Score predicted masks against truth: per-class IoU, mIoU, FwIoU, Dice, pixel accuracy."""
    from segmix.data.io import write_text
    from segmix.data.spec import PRESETS, resolve_spec
    from segmix.eval import score_mask_folders

    if dataset is None and preset is None:
        _fail("the classes decide the scores: pass --dataset DIR or --preset NAME")
    if dataset is None and preset not in PRESETS:
        _fail(f"--preset {preset}: unknown preset; known: {', '.join(PRESETS)}")
    spec = PRESETS[preset] if dataset is None else resolve_spec(dataset, preset)
    if json_out is not None:
        prepare_output_file(json_out, "--json file")
    scores, count = score_mask_folders(pred_dir, gt_dir, spec)
    print_scores(scores, f"{count} masks")
    if json_out is not None:
        write_text(json_out, json.dumps(scores.as_dict(), indent=2))


CONFIG_NAMES = (
    "demo",
    "luad-histoseg",
    "bcss-wsss",
    "wsss4luad",
    "demo-hard",
    "uni",
    "uni2-h",
    "virchow2",
    "h-optimus-0",
    "prov-gigapath",
    "stage1",
    "stage2",
    "cams",
    "run",
)


@_command("show", group=config_app)
def config_show(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(CONFIG_NAMES)}, or a YAML file of yours.")] = "demo",
    overrides: Overrides = [],
) -> None:
    """Print a config in full (every key, its value and what it means): the keys `--set` takes.

    demo / luad-histoseg / bcss-wsss / wsss4luad and YAML files are `segmix run` configs
    (--set stage1.train.epochs=5); stage1, stage2 and cams are the defaults of train-cls,
    train-seg and cams (--set train.epochs=5); run is the defaults of `segmix run`.
    """
    from segmix.cam import CamConfig
    from segmix.config import Stage1Config, Stage2Config, commented_yaml
    from segmix.pipeline import RunConfig

    models = {"stage1": Stage1Config, "stage2": Stage2Config, "cams": CamConfig, "run": RunConfig}
    if name in models:
        cfg = _configured(models[name], None, overrides)
    elif name in CONFIG_NAMES:
        cfg = _configured(RunConfig, _packaged_config(name), overrides)
    elif Path(name).is_file():
        cfg = _configured(RunConfig, Path(name), overrides)
    else:
        _fail(f"{name}: no such config file or name; names: {', '.join(CONFIG_NAMES)}")
    sys.stdout.write(commented_yaml(cfg))


def print_scores(scores, title: str) -> None:
    t = Table(title=title)
    t.add_column("class")
    t.add_column("IoU", justify="right")
    t.add_column("Dice", justify="right")
    for c, iou, dice in zip(scores.classes, scores.iou, scores.dice):
        t.add_row(c, f"{iou:.4f}", f"{dice:.4f}")
    t.add_row(Text("mean", style="bold"), f"{scores.miou:.4f}", f"{scores.mdice:.4f}")
    Console().print(t)
    Console().print(f"mIoU {scores.miou:.4f}  FwIoU {scores.fwiou:.4f}  pixel acc {scores.pixel_accuracy:.4f}")


if __name__ == "__main__":
    main()
