"""The pictures and tables of ``report.html``, each a function of the run's files."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np
import torch

from segmix.data.dataset import TileDataset
from segmix.data.io import IGNORE_INDEX, read_mask
from segmix.data.preview import contact_sheet, overlay
from segmix.models import CLASSIFIER_FILE, load_classifier, load_segmenter, segment
from segmix.models.inference import in_model_stain
from segmix.pipeline.layout import run_segmenter
from segmix.pseudo import class_activation_maps
from segmix.shuffle import HistoryRow, NoMix, read_history_csv
from segmix.train import build_mixer
from segmix.train.data import TrainTiles


def _b64_png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _b64_fig(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f}"


def metrics_table(metrics: dict, classes: list[str]) -> str:
    rounds = [
        (f"Round {name.removeprefix('round')} masks (train, stage 2's label-gated predictions)", r.get("masks"))
        for name, r in (metrics.get("relabel") or {}).items()
    ]
    rows = [
        ("Pseudo masks (train, from CAMs)", metrics.get("pseudo_masks")),
        *rounds,
        ("Final model, weak labels only (test)", metrics.get("test")),
        ("Same model on true masks (test, reference)", metrics.get("fully_supervised")),
    ]
    head = "".join(f"<th>{html.escape(c)} IoU</th>" for c in classes)
    body = []
    for name, m in rows:
        if not m:
            continue
        cells = "".join(f"<td>{_pct(m['per_class'].get(c))}</td>" for c in classes)
        body.append(
            f"<tr><td>{name}</td><td><b>{_pct(m['miou'])}</b></td><td>{_pct(m['fwiou'])}</td>"
            f"<td>{_pct(m.get('dice'))}</td>{cells}</tr>"
        )
    return (
        f"<table><thead><tr><th>tissue map</th><th>mIoU %</th><th>FwIoU %</th><th>Dice %</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def iou_bars(metrics: dict, classes: list[str], palette) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        (n, metrics.get(k))
        for n, k in (
            ("pseudo masks", "pseudo_masks"),
            ("weakly supervised", "test"),
            ("fully supervised", "fully_supervised"),
        )
    ]
    series = [(n, m) for n, m in series if m]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(series), 1)
    for i, (name, m) in enumerate(series):
        vals = [(m["per_class"].get(c) or 0) * 100 for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, vals, width, label=name, color=["#c9a3d6", "#8a5a9e", "#4b2a5a"][i])
    ax.set_xticks(np.arange(len(classes)) + width * (len(series) - 1) / 2, classes)
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _b64_fig(fig)


# How each decision is drawn on the signal: marker, colour, size.
DECISIONS = {
    "advance": ("^", "#2a8a3a", 11),
    "back": ("v", "#c0392b", 11),
    "hold": ("o", "#888888", 6),
    "warmup": ("o", "#cccccc", 6),
}


def compared_line(row: HistoryRow) -> float | None:
    """The level the rule compared the step's signal with, in the signal's units: the row's
    threshold, which the rules keep in error units (the signal itself, or 1 - the signal); None
    where the rule had nothing to compare with (warm-up, a first reading).

    >>> compared_line(HistoryRow(3, 0.8, 0.2, 0.1, 0, 56, 0.25, "hold"))  # mastery: 1 - (1 - 0.9)
    0.9
    >>> compared_line(HistoryRow(3, 1.3, 1.3, 1.1, 0, 56, 0.25, "hold"))  # a loss: the threshold
    1.1
    """
    if row.threshold is None or row.error is None or row.signal is None:
        return None
    score_rule = abs(row.error - (1.0 - row.signal)) < 1e-9 and abs(row.error - row.signal) > 1e-9
    return round(1.0 - row.threshold if score_rule else row.threshold, 9)


def curriculum_plot(stage1: Path, mastery: float | None = None) -> str | None:
    """Why the curriculum held or moved, per epoch: the signal (± one standard error where the
    probe gives it), the line the rule compared it with (dashed; ``mastery`` where the rows
    record none), each decision and the shuffle setting; from ``curriculum.csv`` / ``probe.csv``
    in ``stage1``."""
    if not (stage1 / "curriculum.csv").is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history_csv(stage1 / "curriculum.csv")
    if not rows:
        return None
    steps = [r.step + 1 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(7, 5), sharex=True)
    axes[0].plot(steps, [r.signal for r in rows], "-", color="#4b2a5a", lw=1)
    _probe_counts(axes[0], stage1 / "probe.csv")
    lines = [compared_line(r) for r in rows]
    if any(v is not None for v in lines):
        axes[0].plot(steps, [float("nan") if v is None else v for v in lines], "--", color="#999999", lw=1.2)
    elif mastery is not None:
        axes[0].axhline(mastery, ls="--", color="#999999", lw=1.2)
    axes[0].set_ylabel("signal")
    for action, (marker, colour, size) in DECISIONS.items():
        shown = [(s, r.signal) for s, r in zip(steps, rows) if r.action == action and r.signal is not None]
        if shown:
            axes[0].plot(*zip(*shown), marker, color=colour, markersize=size, ls="none", label=action)
    axes[0].plot([], [], "--", color="#999999", label="line compared with")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: no point hidden
    axes[1].step(steps, [r.patch_size for r in rows], where="post", color="#8a5a9e")
    axes[1].set_ylabel("patch px")
    axes[2].step(steps, [r.ratio for r in rows], where="post", color="#8a5a9e")
    axes[2].set_ylabel("swap ratio")
    axes[-1].set_xlabel("epoch (setting used after it)")
    for a in axes:
        a.grid(alpha=0.3)
    return _b64_fig(fig)


def _probe_counts(ax, path: Path) -> None:
    """The feedback probe's reading, ± one standard error, how many cells it counted, and its
    reading at the next level where the rule reads ahead."""
    if not path.is_file():
        return
    probe = list(csv.DictReader(path.open()))
    if not probe:
        return
    steps = [int(r["step"]) + 1 for r in probe]
    reading = [float(r["accuracy"]) for r in probe]
    ax.errorbar(steps, reading, yerr=[float(r["se"]) for r in probe], fmt="none", ecolor="#4b2a5a", capsize=3)
    ahead = [(s, float(r["ahead"])) for s, r in zip(steps, probe) if r.get("ahead")]
    if ahead:  # a rule that reads ahead (lookahead): the same cells at the next level
        ax.plot(*zip(*ahead), "x:", color="#d08a1a", lw=1, label="next level's reading")
    counts = [int(float(r["count"])) for r in probe]
    span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    ax.set_title(f"probe: {span} known cells per reading (bars: ± one standard error)", fontsize=9)


def cam_picture(image: np.ndarray, cam: np.ndarray, label: np.ndarray, palette) -> np.ndarray:
    """Each labelled class's CAM in its palette colour, over a dimmed tile."""
    out = image.astype(np.float64) * 0.45
    for k in np.flatnonzero(label):
        out += cam[k][..., None] * np.array(palette[k], np.float64) * 0.55
    return np.clip(out, 0, 255).astype(np.uint8)


def gallery(ctx, n: int) -> str | None:
    if n == 0:
        return None
    spec = ctx.spec
    tiles = TileDataset(ctx.data_root, "train", spec)
    # prefer tiles with several classes: that is where localisation is hard
    order = sorted(range(len(tiles)), key=lambda i: -int(tiles.samples[i].label.sum()))[:n]
    clf, _, _ = load_classifier(ctx.dir("stage1") / CLASSIFIER_FILE)
    trained = load_segmenter(run_segmenter(ctx.run_dir))
    seg, scfg = trained.network, trained.config
    rows = []
    for i in order:
        item = tiles[i]
        img = item["image"]
        x = clf.normalize(torch.from_numpy(in_model_stain(clf, img)).permute(2, 0, 1)[None])
        cam = class_activation_maps(clf, x, ctx.cfg.cams.scales, ctx.cfg.cams.flip)[0].numpy()
        pseudo = read_mask(ctx.dir("cams") / "masks" / f"{Path(item['name']).stem}.png", spec.num_indices)
        pred = segment(seg, [in_model_stain(seg, img)], scfg, "cpu", spec.num_indices)[0]
        truth = item["mask"] if item["mask"] is not None else np.full(img.shape[:2], IGNORE_INDEX, np.uint8)
        rows.append(
            [
                img,
                overlay(img, truth, spec.palette),
                cam_picture(img, cam, item["label"], spec.palette),
                overlay(img, pseudo, spec.palette),
                overlay(img, pred, spec.palette),
            ]
        )
    return _b64_png(_upscale(contact_sheet(rows), 2))


def mixed_examples(ctx, n: int) -> str | None:
    if n == 0:
        return None
    cfg = ctx.cfg.stage1
    mixer, curriculum = build_mixer(cfg)
    if isinstance(mixer, NoMix):
        return None
    trace = ctx.dir("stage1") / "curriculum.csv"
    if trace.is_file() and curriculum is not None:
        last = read_history_csv(trace)[-1]
        # The last setting, with at least a quarter swapped: a warm-up row (ratio 0) shows nothing.
        mixer.patch_size, mixer.ratio = last.patch_size, max(last.ratio, 0.25)
    tiles = TrainTiles(TileDataset(ctx.data_root, "train", ctx.spec, with_masks=False), cfg.train.image_size)
    batch = [tiles[i] for i in range(min(8, len(tiles)))]  # resized as stage 1 resizes them
    size = cfg.train.image_size
    images = torch.stack([image for image, _, _ in batch]).float() / 255
    labels = torch.stack([label for _, label, _ in batch])
    mixed, targets, info = mixer(images, labels, torch.Generator().manual_seed(0))
    colours = [
        (228, 26, 28),
        (55, 126, 184),
        (77, 175, 74),
        (152, 78, 163),
        (255, 127, 0),
        (255, 255, 51),
        (166, 86, 40),
        (247, 129, 191),
    ]
    rows = []
    for b in range(min(n, len(batch))):
        mimg = (mixed[b].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        row = [mimg]
        if info.source is not None:
            src = info.source[b].numpy()
            src = np.where(src == b, IGNORE_INDEX, src).astype(np.uint8)  # the tile's own patches stay unpainted
            smap = np.full((size, size), IGNORE_INDEX, np.uint8)
            ps = info.patch_size
            smap[: src.shape[0] * ps, : src.shape[1] * ps] = np.kron(src, np.ones((ps, ps), np.uint8))
            row.append(overlay(mimg, smap, colours, alpha=0.45))
        rows.append(row)
    return _b64_png(_upscale(contact_sheet(rows), 2))


def _upscale(image: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(image, f, axis=0), f, axis=1)
