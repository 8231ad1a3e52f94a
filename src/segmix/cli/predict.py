"""``segmix predict``: images and whole slides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segmix.cli.app import (
    Precision,
    _command,
    _fail,
    _precision,
    _progress,
    _say,
)
from segmix.data.io import prepare_output_dir


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
    probs: Annotated[
        bool, typer.Option("--probs", help="Slides: also write per-class probabilities (_probs.tif, uint8, 255 = 1).")
    ] = False,
    simplify_um: Annotated[
        float, typer.Option("--simplify-um", min=0.0, help="Slides: GeoJSON polygons simplified to this many microns.")
    ] = 1.0,
    precision: Precision = None,
) -> None:
    """Segment images (mask, overlay, area CSV) and whole slides (class map, overlay, mm^2, GeoJSON).

    One of --checkpoint or --run names the model. Images: <input name>_mask.png, _overlay.png,
    _areas.csv in --out; inputs whose outputs would replace an input file or each other (two
    inputs of the same name) are refused before any work. Slides: one folder per slide in --out
    (_classmap.tif at the resolution read, _areas.csv and .geojson from it, _classmap.png and
    _overlay.png as a quick look, _summary.json; _probs.tif with --probs) and --out/cohort.csv. A
    re-run skips what is done (same input file, model, options and precision, outputs intact). A
    slide that cannot be predicted (unreadable, no such level, no resolution recorded) is recorded
    in cohort.csv and the others go on (exit 1 at the end). Under torchrun each process predicts every world-th slide.
    """
    from segmix.config.precision import resolve_precision
    from segmix.infer import (
        check_resolution,
        is_slide,
        output_name,
        output_paths,
        plan_cohort,
        plan_outputs,
        predict_image,
        prediction_inputs,
    )
    from segmix.infer.records import input_identity, same_request, sealed
    from segmix.models import load_segmenter
    from segmix.models.inference import model_fingerprint
    from segmix.runtime import fit_threads, pick_device, rank_and_world

    if checkpoint is None and run_dir is not None:
        from segmix.pipeline.layout import run_segmenter

        checkpoint = run_segmenter(run_dir)
    if checkpoint is None:
        _fail("no model: pass --checkpoint segmenter.pt or --run RUN_DIR")
    precision = _precision(precision)
    files = prediction_inputs(inputs)
    slides = [f for f in files if is_slide(f)]
    plan_outputs(files, out)
    plan_cohort(slides, out)
    trained = load_segmenter(checkpoint)  # refused before the output folder is made
    prepare_output_dir(out)
    trained.config = trained.config.model_copy(update={"precision": precision or trained.config.precision})
    model, cfg, spec = trained.network, trained.config, trained.spec
    if slides:  # option errors that concern every slide, before any work (a slide's own: in its row)
        check_resolution(spec, mpp, level)
    device = pick_device()
    fit_threads(0, None, gpu=device.type == "cuda")
    model = trained.to(device).network
    rank, world = rank_and_world()
    request = {"model": model_fingerprint(model), "precision": resolve_precision(cfg.precision, device.type)}
    for f in [f for f in files if not is_slide(f)][rank::world]:  # each process its share
        paths, name, source = output_paths(f, out), output_name(f), str(f.resolve())
        ask = {**request, "input": input_identity(f)}
        if same_request(out, name, source, ask, paths["areas"]):  # written last
            _say(f"{f}: skipped (done before)")
            continue
        with sealed(list(paths.values()), name, source, ask):
            predict_image(trained, f, out)
        _say(f"{f}: done")
    if slides:
        slide_args = dict(level=level, mpp=mpp, overlap=overlap, batch_size=batch_size, device=device)
        slide_args |= dict(probs=probs, simplify_um=simplify_um)
        _predict_slides(model, cfg, spec, slides, out, slide_args, rank, world)
    _say(f"outputs in {out}")


def _predict_slides(model, cfg, spec, slides: list[Path], out: Path, slide_args: dict, rank: int, world: int) -> None:
    """The slides as a cohort, with progress over this process's slides and the current slide's
    tiles; the first process reports the slides that could not be predicted (exit 1)."""
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
        _say(f"{len(failed)} of {len(slides)} slides could not be predicted (see {table.name})", "bold red", "error: ")
        raise typer.Exit(1)
