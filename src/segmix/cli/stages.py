"""One command per pipeline step: train-cls, cams, relabel, train-seg, evaluate, export, score-masks, config show."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from segmix.cli.app import (
    ConfigFile,
    DataDir,
    OutDir,
    Overrides,
    Precision,
    Preset,
    RunDir,
    _command,
    _configured,
    _fail,
    _packaged_config,
    _precision,
    _progress,
    _say,
    config_app,
    print_scores,
)
from segmix.data.io import prepare_output_dir, prepare_output_file


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
    from segmix.pseudo import generate_pseudo_masks

    def write(cfg, spec, on_batch):
        return generate_pseudo_masks(classifier, data, out, cfg, spec, on_batch=on_batch)

    _write_masks(data, out, config, overrides, preset, "pseudo masks", write)


@_command()
def relabel(
    segmenter: Annotated[
        Path, typer.Option("--checkpoint", "--model", help="segmenter.pt from train-seg, or a folder of segmix export.")
    ],
    data: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (masks/ inside).")],
    scales: Annotated[
        Optional[list[float]],
        typer.Option(
            "--scale",
            min=0.25,
            max=4,
            help="Resize factor of the tiles, repeatable: probabilities averaged over them "
            "[default: relabel.scales in segmix config show].",
        ),
    ] = None,
    config: ConfigFile = None,
    overrides: Overrides = [],
    preset: Preset = None,
) -> None:
    """Pseudo masks for the next round of stage 2: the segmenter's predictions on the training
    tiles, gated by their image labels; scored when truth exists (keys: split, batch_size, white,
    saturation, num_workers, threads, scales; --scale overrides the last)."""
    from segmix.config.pseudo import MASK_INPUT_KEYS
    from segmix.pseudo import CamConfig
    from segmix.pseudo.relabel import RelabelOptions, relabel_masks

    def write(cfg, spec, on_batch):
        cams = CamConfig(**cfg.model_dump(include=set(MASK_INPUT_KEYS)))
        return relabel_masks(segmenter, data, out, cams, spec, on_batch=on_batch, scales=scales or cfg.scales)

    _write_masks(data, out, config, overrides, preset, "relabelled masks", write, RelabelOptions)


def _write_masks(data, out, config, overrides, preset, what: str, write, options=None) -> None:
    """What ``cams`` and ``relabel`` share: the config (``options``, default CamConfig), the
    output folder, a progress bar over the split and the scores; ``write(cfg, spec, on_batch)``
    writes the masks, returns the scores."""
    from segmix.data.dataset import TileDataset
    from segmix.data.spec import resolve_spec
    from segmix.pseudo import CamConfig

    cfg = _configured(options or CamConfig, config, overrides)
    spec = resolve_spec(data, preset)
    total = len(TileDataset(data, cfg.split, spec, with_masks=False))
    prepare_output_dir(out)
    with _progress() as bar:
        task = bar.add_task(f"{what} ({cfg.split})", total=total)
        scores = write(cfg, spec, lambda n: bar.advance(task, n))
    _say(f"wrote {total} masks to {out / 'masks'}")
    if scores is not None:
        print_scores(scores, f"{what} vs truth ({cfg.split}), every pixel")
        if scores.left_out:
            _say(f"left out of stage 2 (margin): {scores.left_out:.1%}; the rest {scores.kept_accuracy:.1%} right")


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
    "cpu",
    "luad-histoseg",
    "bcss-wsss",
    "wsss4luad",
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
    from segmix.config import Stage1Config, Stage2Config, commented_yaml
    from segmix.pipeline import RunConfig
    from segmix.pseudo import CamConfig

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
