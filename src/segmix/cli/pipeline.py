"""``segmix run``, ``demo``, ``ablate`` and ``methods``: the whole pipeline and its methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from segmix.cli.app import (
    Overrides,
    PipelineConfig,
    PipelineData,
    _command,
    _fail,
    _packaged_config,
    _run_config,
    _say,
)
from segmix.data.io import prepare_output_dir


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
    """The whole pipeline: (synthesise) -> stage 1 -> pseudo masks -> stage 2 (-> relabel) -> evaluate -> report."""
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
        str, typer.Option(help="Comma-separated mixing methods (`segmix methods` lists them; e.g. none,segmix).")
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


@_command()
def methods() -> None:
    """The registered mixing methods (stage1.mixing.method), each with its mixer, its curriculum
    rule, the signal the rule reads and where its knobs are set."""
    from segmix.shuffle import CURRICULA, METHODS, MIXERS

    for m in METHODS.values():
        rule = CURRICULA[m.curriculum] if m.curriculum else None
        knobs = [f"stage1.mixing.{m.mixer}"] if MIXERS[m.mixer].knobs.model_fields else []
        knobs += [f"stage1.curriculum.{rule.name}"] if rule and rule.knobs.model_fields else []
        parts = [f"mixer {m.mixer}", f"rule {m.curriculum}" if rule else "no curriculum"]
        parts += [f"reads {rule.signal}"] if rule and rule.signal else []
        parts += [f"knobs: {', '.join(knobs)}"] if knobs else []
        typer.echo(f"{m.name:<18} {m.description}\n{'':<18} ({'; '.join(parts)})")
