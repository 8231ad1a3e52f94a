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

from segmix.data.io import MAX_PIXELS_ENV, max_image_pixels
from segmix.errors import ConfigError, user_message

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
    except BrokenPipeError:
        # The reader went away (`segmix methods | head`): nothing left to say to it. Python would
        # still complain when flushing stdout at exit, so stdout goes to devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
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
    try:  # the limit from the environment, checked before any work
        max_image_pixels()
    except ConfigError as err:
        _say(str(err), "bold red", "error: ")
        raise typer.Exit(2) from None


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


def _packaged_config(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("segmix") / "configs" / f"{name}.yaml"))


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
