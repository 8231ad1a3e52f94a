"""``segmix`` command line: one sub-command per pipeline step."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segmix.data.errors import DatasetError

app = typer.Typer(help="segmix: pixel-level tissue maps of H&E images from image-level labels.", no_args_is_help=True)
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages.")) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    # The level sits on the handler too: Lightning sets its own loggers to INFO when imported
    # (later, inside the commands), and its start-up banners and tips are noise for our users.
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False, level=level)],
    )


def _fail(err: Exception) -> None:
    # User errors get one line and exit code 2, not a traceback.
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(2)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the benchmark into."),
    n_train: int = typer.Option(800, "--train", help="Training tiles (image-level labels in names)."),
    n_val: int = typer.Option(100, "--val", help="Validation tiles with masks."),
    n_test: int = typer.Option(100, "--test", help="Test tiles with masks."),
    tile_size: int = typer.Option(112, "--size", help="Tile edge in pixels."),
    seed: int = typer.Option(0, help="Same seed, byte-identical files."),
    classes: str = typer.Option("TE,NEC,LYM,TAS", help="Tissue classes, comma separated."),
    stain_jitter: float = typer.Option(0.25, help="Per-tile stain variation, 0-1."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    sheet: bool = typer.Option(True, help="Write contact_sheet.png."),
) -> None:
    """Generate the synthetic H&E tissue benchmark (generic layout, exact pixel truth)."""
    from pydantic import ValidationError

    from segmix.data.synth import SynthConfig, generate

    try:
        cfg = SynthConfig(
            tile_size=tile_size,
            classes=[c.strip() for c in classes.split(",") if c.strip()],
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            seed=seed,
            stain_jitter=stain_jitter,
        )
    except ValidationError as err:
        _fail(ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())))
    total = cfg.n_train + cfg.n_val + cfg.n_test
    with _progress() as bar:
        task = bar.add_task("synthesising tiles", total=total)
        spec = generate(cfg, out, workers=workers, progress=lambda n: bar.advance(task, n))
    if sheet:
        write_contact_sheet(out, spec)
    console.print(f"wrote {total} tiles to {out} (classes: {', '.join(spec.classes)})")


def write_contact_sheet(root: Path, spec, rows: int = 4, cols: int = 6) -> Path:
    from segmix.data.dataset import TileDataset
    from segmix.data.io import write_image
    from segmix.data.preview import contact_sheet, overlay

    ds = TileDataset(root, "train", spec=spec)
    pics = []
    for i in range(min(rows * cols, len(ds))):
        item = ds[i]
        pics += [item["image"], overlay(item["image"], item["mask"], spec.palette)]
    grid = [pics[r : r + 2 * cols] for r in range(0, len(pics), 2 * cols)]
    path = Path(root) / "contact_sheet.png"
    write_image(path, contact_sheet(grid))
    return path


@app.command()
def info(
    dataset: Path = typer.Argument(..., help="Dataset root folder."),
    preset: Optional[str] = typer.Option(None, help="luad-histoseg, bcss-wsss or wsss4luad (default: detect)."),
    check: bool = typer.Option(False, help="Decode every image and list all problems."),
) -> None:
    """Summarise a dataset: per-split counts, label co-occurrence, pixel frequencies, sizes."""
    from segmix.data.spec import resolve_spec
    from segmix.data.summary import summarize

    try:
        spec = resolve_spec(dataset, preset)
        with _progress() as bar:
            task = bar.add_task("reading", total=None)
            splits = summarize(dataset, spec, check=check, on_file=lambda: bar.advance(task))
    except DatasetError as err:
        _fail(err)
    out = Console()
    out.print(f"[bold]{dataset}[/]  dataset: {spec.name}  classes: {', '.join(spec.classes)}")
    counts = Table(title="splits")
    for col in ("split", "images", "skipped files", "sizes (WxH: count)"):
        counts.add_column(col)
    for s in splits:
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in s.sizes.most_common(4))
        if len(s.sizes) > 4:
            sizes += f", ... ({len(s.sizes)} sizes)"
        counts.add_row(s.name, str(s.images), str(s.skipped), sizes)
    out.print(counts)
    for s in splits:
        if s.cooccurrence is not None and s.cooccurrence.any():
            t = Table(title=f"{s.name}: tiles carrying both labels (diagonal: the label)")
            t.add_column("")
            for c in spec.classes:
                t.add_column(c, justify="right")
            for i, c in enumerate(spec.classes):
                t.add_row(c, *[str(v) for v in s.cooccurrence[i]])
            out.print(t)
        if s.pixels is not None:
            total = max(int(s.pixels.sum()), 1)
            names = spec.classes + ["background"] * (spec.num_indices - spec.num_classes)
            t = Table(title=f"{s.name}: mask pixel frequencies")
            t.add_column("class")
            t.add_column("share", justify="right")
            for name, v in zip(names, s.pixels):
                t.add_row(name, f"{v / total:.1%}")
            out.print(t)
        for p in s.problems:
            out.print(f"[red]problem:[/] {p}")
    if any(s.problems for s in splits):
        raise typer.Exit(1)


def _configured(model, config: Optional[Path], overrides: list[str]):
    from segmix.config import ConfigError, load_config

    try:
        return load_config(model, config, overrides)
    except ConfigError as err:
        _fail(err)


@app.command("train-cls")
def train_cls(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset root."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumed when it holds a checkpoint)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Stage-1 YAML config."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set epochs=5."),
    preset: Optional[str] = typer.Option(None, help="Dataset preset (default: detect)."),
) -> None:
    """Stage 1: train the multi-label CAM classifier with the configured mixer and curriculum."""
    from segmix.data.spec import resolve_spec
    from segmix.train import Stage1Config, train_classifier

    cfg = _configured(Stage1Config, config, overrides)
    try:
        path = train_classifier(cfg, data, out, spec=resolve_spec(data, preset))
    except (DatasetError, ValueError, FileNotFoundError, FloatingPointError) as err:
        _fail(err)
    console.print(f"classifier written to {path}")


@app.command()
def cams(
    classifier: Path = typer.Option(..., "--classifier", help="classifier.pt from train-cls."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset root."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (masks/ inside)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="CAM YAML config."),
    overrides: list[str] = typer.Option([], "--set", help="Override a key: --set uncertain=0.2."),
    preset: Optional[str] = typer.Option(None, help="Dataset preset (default: detect)."),
) -> None:
    """Pseudo masks from CAMs (label-gated, background policy of the dataset); scored when truth exists."""
    from segmix.cam import CamConfig, generate_pseudo_masks
    from segmix.data.dataset import TileDataset
    from segmix.data.spec import resolve_spec

    cfg = _configured(CamConfig, config, overrides)
    try:
        spec = resolve_spec(data, preset)
        total = len(TileDataset(data, cfg.split, spec, with_masks=False))
        with _progress() as bar:
            task = bar.add_task(f"pseudo masks ({cfg.split})", total=total)
            scores = generate_pseudo_masks(classifier, data, out, cfg, spec, on_batch=lambda n: bar.advance(task, n))
    except (DatasetError, ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"wrote {total} masks to {out / 'masks'}")
    if scores is not None:
        print_scores(scores, f"pseudo masks vs truth ({cfg.split})")


@app.command("train-seg")
def train_seg(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset root."),
    masks: Path = typer.Option(..., "--masks", "-m", help="Folder of <image stem>.png training masks (pseudo or truth)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumed when it holds a checkpoint)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Stage-2 YAML config."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set epochs=5."),
    preset: Optional[str] = typer.Option(None, help="Dataset preset (default: detect)."),
) -> None:
    """Stage 2: train the segmentation network on pseudo masks (or truth: the upper bound)."""
    from segmix.data.spec import resolve_spec
    from segmix.train import Stage2Config, train_segmenter

    cfg = _configured(Stage2Config, config, overrides)
    try:
        path = train_segmenter(cfg, data, masks, out, spec=resolve_spec(data, preset))
    except (DatasetError, ValueError, FileNotFoundError, FloatingPointError) as err:
        _fail(err)
    console.print(f"segmenter (best epoch by val mIoU) written to {path}")


@app.command()
def evaluate(
    segmenter: Path = typer.Option(..., "--checkpoint", help="segmenter.pt from train-seg."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset root."),
    split: str = typer.Option("test", help="val or test."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write scores, predictions, overlays here."),
    stride: Optional[float] = typer.Option(None, help="Sliding-window stride, share of the window."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Flip test-time augmentation."),
) -> None:
    """Score a segmenter under the dataset's protocol: per-class IoU, mIoU, FwIoU, Dice, pixel accuracy."""
    from segmix.data.dataset import TileDataset
    from segmix.eval.evaluate import evaluate as run_evaluate

    try:
        total = len(TileDataset(data, split))
        with _progress() as bar:
            task = bar.add_task(f"evaluating ({split})", total=total)
            scores = run_evaluate(segmenter, data, split, out, stride, flip, on_batch=lambda n: bar.advance(task, n))
    except (DatasetError, ValueError, FileNotFoundError) as err:
        _fail(err)
    print_scores(scores, f"{segmenter.name} on {split}")


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="Images, folders of images, or whole slides (.svs, .tif, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="segmenter.pt from train-seg."),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="A segmix run folder: uses its best stage-2 model."),
    level: Optional[int] = typer.Option(None, help="Slides: pyramid level to predict at."),
    mpp: Optional[float] = typer.Option(None, help="Slides: target microns per pixel (picks the level)."),
    overlap: float = typer.Option(0.25, help="Slides: share of each tile shared with its neighbours."),
    batch_size: int = typer.Option(16, help="Tiles per forward pass."),
) -> None:
    """Segment images (mask, overlay, area CSV) and whole slides (class map, overlay, mm^2, GeoJSON)."""
    from segmix.data.io import IMAGE_SUFFIXES
    from segmix.infer import SLIDE_SUFFIXES, predict_image, predict_slide
    from segmix.train.stage2 import load_segmenter

    if checkpoint is None and run_dir is not None:
        checkpoint = run_dir / "stage2" / "segmenter.pt"
    if checkpoint is None:
        _fail(ValueError("pass --checkpoint segmenter.pt or --run RUN_DIR"))
    try:
        import torch

        model, cfg, spec = load_segmenter(checkpoint)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model.to(device)
        files: list[Path] = []
        for item in inputs:
            if item.is_dir():
                files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | SLIDE_SUFFIXES)
            elif item.is_file():
                files.append(item)
            else:
                raise DatasetError(item, "input does not exist")
        if not files:
            raise DatasetError(inputs[0], "no images or slides to predict")
        for f in files:
            if f.suffix.lower() in SLIDE_SUFFIXES:
                with _progress() as bar:
                    task = bar.add_task(f"{f.name}", total=None)
                    r = predict_slide(
                        model, cfg, spec, f, out, level, mpp, overlap, batch_size, device=device,
                        on_tiles=lambda done, total: bar.update(task, completed=done, total=total),
                    )
                console.print(f"{f.name}: level {r.level}, {r.tiles_run}/{r.tiles_total} tissue tiles, {r.tiles_per_second:.1f} tiles/s")
            else:
                predict_image(model, cfg, spec, f, out, device)
                console.print(f"{f.name}: done")
    except (DatasetError, ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"outputs in {out}")


def _run_config(config: Optional[Path], data: Optional[Path], overrides: list[str]):
    from segmix.pipeline import RunConfig

    extra = [f"data={data}"] if data is not None else []
    return _configured(RunConfig, config, extra + list(overrides))


def _user_errors():
    from segmix.config import ConfigError

    return (DatasetError, ValueError, FileNotFoundError, FloatingPointError, ConfigError)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/)."),
    out: Path = typer.Option(Path("runs/run"), "--out", "-o", help="Run folder; re-running resumes and skips done stages."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset root (overrides the config's data)."),
    overrides: list[str] = typer.Option([], "--set", help="Override any key: --set stage1.epochs=5."),
    start: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage."),
) -> None:
    """The whole pipeline: (synthesise) -> stage 1 -> pseudo masks -> stage 2 -> evaluate -> report."""
    from segmix.pipeline import run_pipeline

    cfg = _run_config(config, data, overrides)
    try:
        metrics = run_pipeline(cfg, out, start, until)
    except _user_errors() as err:
        _fail(err)
    _print_run(metrics, out)


def _print_run(metrics: dict, out: Path) -> None:
    def pct(m):
        return f"{m['miou'] * 100:.1f}%" if m and m.get("miou") is not None else "–"

    console.print(
        f"pseudo masks mIoU {pct(metrics.get('pseudo_masks'))} · test mIoU {pct(metrics.get('test'))} · "
        f"fully supervised {pct(metrics.get('fully_supervised'))}"
    )
    if (out / "report.html").is_file():
        console.print(f"report: {out / 'report.html'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", "-o", help="Run folder."),
    overrides: list[str] = typer.Option([], "--set", help="Override any key of configs/demo.yaml."),
) -> None:
    """Synthetic H&E benchmark end to end on the CPU (configs/demo.yaml), with report.html."""
    from importlib.resources import files

    from segmix.pipeline import run_pipeline

    cfg = _run_config(Path(str(files("segmix") / "configs" / "demo.yaml")), None, overrides)
    try:
        metrics = run_pipeline(cfg, out)
    except _user_errors() as err:
        _fail(err)
    _print_run(metrics, out)


@app.command()
def ablate(
    config: Path = typer.Argument(..., help="Pipeline YAML (e.g. configs/demo.yaml)."),
    methods: str = typer.Option("none,segmix", help="Comma-separated: none, cutmix, mixup, shuffle-fixed, shuffle-scheduled, segmix."),
    seeds: int = typer.Option(3, help="Seeds per method (0..N-1)."),
    out: Path = typer.Option(Path("runs/ablation"), "--out", "-o", help="Output folder (ablation.csv, ablation.md)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset root (overrides the config's data)."),
    overrides: list[str] = typer.Option([], "--set", help="Override any key."),
) -> None:
    """Mixing methods x seeds through the pipeline; writes ablation.csv / ablation.md."""
    from segmix.pipeline import run_ablation
    from segmix.shuffle import METHODS

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        _fail(ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}"))
    cfg = _run_config(config, data, overrides)
    try:
        run_ablation(cfg, names, seeds, out)
    except _user_errors() as err:
        _fail(err)
    Console().print((out / "ablation.md").read_text())


@app.command("score-masks")
def score_masks_cmd(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted palette PNG masks."),
    gt_dir: Path = typer.Argument(..., help="Folder of truth masks with the same file names."),
    dataset: Optional[Path] = typer.Option(None, help="Dataset root whose description gives classes."),
    preset: Optional[str] = typer.Option(None, help="Preset giving classes, if no --dataset."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
) -> None:
    """Score predicted masks against truth: per-class IoU, mIoU, FwIoU, Dice, pixel accuracy."""
    from segmix.data.io import IMAGE_SUFFIXES, read_mask
    from segmix.data.spec import PRESETS, resolve_spec
    from segmix.eval.metrics import ConfusionMatrix

    try:
        spec = resolve_spec(dataset, preset) if dataset else PRESETS[preset or "luad-histoseg"]
        preds = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not preds:
            raise DatasetError(pred_dir, "no mask images in folder")
        names = spec.classes + ["background"] * (spec.num_indices - spec.num_classes)
        cm = ConfusionMatrix(spec.num_indices, names, spec.exclude_index)
        for p in preds:
            gt_path = gt_dir / p.name
            if not gt_path.is_file():
                raise DatasetError(p, f"no truth mask {gt_path}")
            truth = read_mask(gt_path, spec.num_indices, spec.palette)
            cm.update(read_mask(p, spec.num_indices, spec.palette, truth.shape), truth)
    except DatasetError as err:
        _fail(err)
    scores = cm.compute()
    print_scores(scores, f"{len(preds)} masks")
    if json_out:
        json_out.write_text(json.dumps(scores.as_dict(), indent=2))


def print_scores(scores, title: str) -> None:
    t = Table(title=title)
    t.add_column("class")
    t.add_column("IoU", justify="right")
    t.add_column("Dice", justify="right")
    for c, iou, dice in zip(scores.classes, scores.iou, scores.dice):
        t.add_row(c, f"{iou:.4f}", f"{dice:.4f}")
    t.add_row("[bold]mean[/]", f"{scores.miou:.4f}", f"{scores.mdice:.4f}")
    Console().print(t)
    Console().print(f"mIoU {scores.miou:.4f}  FwIoU {scores.fwiou:.4f}  pixel acc {scores.pixel_accuracy:.4f}")


if __name__ == "__main__":
    app()
