"""``segmix synth`` and ``segmix info``: the synthetic benchmark and a dataset's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from segmix.cli.app import (
    OutDir,
    Preset,
    _command,
    _fail,
    _progress,
    _say,
)
from segmix.data.io import prepare_output_dir
from segmix.data.synth_config import SynthConfig
from segmix.errors import validation_problems

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


_SYNTH = SynthConfig.model_fields  # the one source of the flags' defaults


@_command()
def synth(
    out: OutDir,
    n_train: Annotated[int, typer.Option("--train", help="Training tiles (image-level labels in names).")] = _SYNTH[
        "n_train"
    ].default,
    n_val: Annotated[int, typer.Option("--val", help="Validation tiles with masks.")] = _SYNTH["n_val"].default,
    n_test: Annotated[int, typer.Option("--test", help="Test tiles with masks.")] = _SYNTH["n_test"].default,
    tile_size: Annotated[int, typer.Option("--size", help="Tile edge in pixels.")] = _SYNTH["tile_size"].default,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = _SYNTH["seed"].default,
    classes: Annotated[str, typer.Option(help="Tissue classes, comma separated.")] = ",".join(
        _SYNTH["classes"].default
    ),
    stain_jitter: Annotated[float, typer.Option(help="Per-tile stain variation, 0-1.")] = _SYNTH[
        "stain_jitter"
    ].default,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores).")] = None,
    sheet: Annotated[bool, typer.Option(help="Write contact_sheet.png.")] = True,
    preset: Annotated[
        str,
        typer.Option(help="Difficulty: default, or hard (mostly multi-label tiles, a rare class, closer textures)."),
    ] = _SYNTH["preset"].default,
) -> None:
    """Generate the synthetic H&E tissue benchmark (generic layout, exact pixel truth)."""
    from pydantic import ValidationError

    from segmix.data.preview import write_contact_sheet
    from segmix.data.synth import generate

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
