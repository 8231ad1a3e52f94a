"""``segmix export``: a run's models as a package a colleague can use without the run.

``OUT/model.safetensors`` + ``OUT/config.json`` (the segmenter, :mod:`segmix.models.package`),
``OUT/classifier/`` (the stage-1 classifier, for CAMs on new tiles, when the run has one) and
``OUT/README.md``, a model card: the data and its labels, the model, the run's metrics with their
protocol, intended use and limits.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from segmix.data.io import prepare_output_dir, write_text
from segmix.errors import MissingModelFile, OutputError
from segmix.models import CLASSIFIER_FILE, SEGMENTER_FILE, load_payload
from segmix.models.package import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, is_package, package_config, write_package
from segmix.pipeline.layout import read_json, run_segmenter


def run_models(run: Path) -> tuple[Path, Path | None]:
    """``(segmenter, classifier or None)`` of a ``segmix run`` folder or a ``train-seg`` folder."""
    for seg, clf in ((run_segmenter(run), run / "stage1" / CLASSIFIER_FILE), (run / SEGMENTER_FILE, None)):
        if seg.is_file():
            return seg, clf if clf is not None and clf.is_file() else None
    raise MissingModelFile(
        f"{run}: no stage-2 model ({SEGMENTER_FILE} or stage2/{SEGMENTER_FILE}); finish the run first"
    )


def export_run(run: str | Path, out: str | Path) -> Path:
    """Write the package of ``run`` into ``out``; returns ``out``.

    ``out`` must be empty, new, or an earlier package (replaced file by file, atomically; files
    of the user's inside it are kept). Nothing is written through a link inside ``out``.

    Raises:
        OutputError: ``out`` holds other files, or a link or file where ``classifier/`` goes.
        MissingModelFile: the run has no stage-2 model.
    """
    run, out = Path(run), Path(out)
    seg_file, clf_file = run_models(run)
    if out.is_dir() and any(out.iterdir()) and not is_package(out):
        raise OutputError(f"{out}: holds other files; export into a new or empty folder")
    nested = out / "classifier"
    if nested.is_symlink() or (nested.exists() and not nested.is_dir()):
        raise OutputError(f"{nested}: a link or a file where the classifier's package goes; export into a new folder")
    prepare_output_dir(out)
    segmenter = load_payload(seg_file, {"state_dict", "config", "spec"}, "segmenter")
    write_package(segmenter, "segmenter", out)
    if clf_file is not None:
        classifier = load_payload(clf_file, {"state_dict", "config", "classes"}, "classifier")
        write_package(classifier, "classifier", nested)
    elif is_package(nested):  # an earlier export's: not this run's model (the user's files there stay)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            (nested / name).unlink(missing_ok=True)
        if not any(nested.iterdir()):
            nested.rmdir()
    metrics = read_json(run / "metrics.json") or {}
    run_cfg = _read_yaml(run / "config.yaml")
    write_text(
        out / CARD_FILE, model_card(package_config(segmenter, "segmenter"), metrics, run_cfg, clf_file is not None)
    )
    return out


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def model_card(config: dict, metrics: dict, run_cfg: dict, with_classifier: bool) -> str:
    """The package's ``README.md``: what a colleague needs before using the model."""
    spec, cfg = config["spec"], config["config"]
    synthetic = run_cfg.get("data", "") is None
    data = (
        "synthetic H&E-like tiles (`segmix synth`), no licence restrictions"
        if synthetic
        else (f"`{spec['name']}`; its licence is the data set's own: state it here before sharing")
    )
    mpp = f"{config['mpp']} µm/px" if config["mpp"] else "unknown (slides need `--mpp` or `--level`)"
    indices = ", ".join(f"{i} {name}" for i, name in enumerate(config["mask_indices"]))
    stain = (config["stain"] or {}).get("method", "none")
    norm = config["normalization"]
    lines = [
        f"# segmix model: {spec['name']} ({', '.join(config['classes'])})",
        "",
        f"Written by segmix {config['segmix']} (`segmix export`). Weights: `model.safetensors`; everything that",
        "rebuilds and feeds the model: `config.json`."
        + (" The stage-1 classifier (CAMs on new tiles) is in `classifier/`." if with_classifier else ""),
        "",
        "## Use",
        "",
        "```bash",
        "segmix predict --model THIS_FOLDER slide.svs tile.png --out OUT",
        "segmix evaluate --model THIS_FOLDER --data DATASET --split test",
        "```",
        "",
        "## Model",
        "",
        f"- Architecture: {config['architecture']}, encoder `{config['encoder']}`; precision `{cfg.get('precision')}`.",
        f"- Input: {config['input_size']} px RGB / 255, normalised with mean {norm.get('mean')} and std"
        f" {norm.get('std')}.",
        f"- Mask indices: {indices}.",
        f"- Training resolution: {mpp}. Stain normalisation: {stain}.",
        "",
        "## Training data and labels",
        "",
        f"- Data: {data}.",
        "- Labels: image-level labels only (which tissues a tile holds). Stage 2 trained on SegMix pseudo masks:",
        "  label-gated class activation maps of a stage-1 classifier trained with shuffled-patch batches.",
        "",
        "## Metrics (the run's `metrics.json`)",
        "",
        *_metric_lines(metrics, spec),
        "",
        "## Intended use and limits",
        "",
        "- Research use: tissue maps for exploration and quantification; not a diagnostic device.",
        "- Trained without a single drawn mask: borders follow the classifier's activation maps and can be",
        "  coarse; rare classes and classes that always appear together are the weakest.",
        "- Scanner, stain, organ and resolution shifts lower accuracy: check on your own slides first, and read",
        "  slides at the training resolution above.",
    ]
    return "\n".join(lines) + "\n"


def _metric_lines(metrics: dict, spec: dict) -> list[str]:
    rows = [
        ("pseudo masks (train split, against its pixel truth)", metrics.get("pseudo_masks")),
        ("final model, weak labels only (test split)", metrics.get("test")),
        ("same network on true masks (test split, reference)", metrics.get("fully_supervised")),
    ]
    rows = [(name, m) for name, m in rows if m]
    if not rows:
        return ["No metrics: the run had no split with pixel truth."]
    out = ["| | mIoU % | FwIoU % | Dice % |", "|---|---|---|---|"]
    for name, m in rows:
        dice = f"{m['dice'] * 100:.2f}" if "dice" in m else "–"
        out.append(f"| {name} | {m['miou'] * 100:.2f} | {m['fwiou'] * 100:.2f} | {dice} |")
    excluded = spec.get("exclude_index")
    out += [
        "",
        "mIoU: mean over the scored mask indices of intersection over union, pixels summed over the split",
        "(a class absent from truth and prediction is left out); FwIoU weights each by its share of truth pixels"
        + (f"; truth pixels of index {excluded} are not scored." if excluded is not None else "."),
    ]
    best, trained = metrics.get("stage2"), "stage 2"
    if rounds := metrics.get("relabel"):  # the final model is the last relabel round's
        last = max(rounds, key=lambda name: int(name.removeprefix("round")))
        best, trained = rounds[last].get("stage2"), f"stage 2's relabel {last.replace('round', 'round ')}"
    if best:
        out.append(
            f"The exported weights are {trained}'s epoch {best['epoch']} "
            f"(best val mIoU, {best['val_miou'] * 100:.2f} %)."
        )
    ratio = (metrics.get("test") or {}).get("ratio_to_fully_supervised")
    if ratio:
        out.append(f"The final model reaches {ratio:.3f} of the fully supervised one's test mIoU.")
    return out
