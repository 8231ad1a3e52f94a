"""``report.html``: one self-contained page (pictures embedded) summarising a run.

Written for two readers: a pathologist who wants to know whether the tissue maps can be
trusted (gallery, per-class scores in words), and a researcher who wants the numbers
(metrics table, curriculum trace, what the mixer did to training images).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from segmix.config.names import segmenter_arch
from segmix.data.io import write_text
from segmix.pipeline.figures import (
    _pct,
    curriculum_plot,
    gallery,
    iou_bars,
    metrics_table,
    mixed_examples,
)
from segmix.pipeline.layout import stage_seconds
from segmix.shuffle import CURRICULA, METHODS

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
  padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0} th,td{border:1px solid #ddd;padding:.35em .7em;text-align:right}
th:first-child,td:first-child{text-align:left} thead th{background:#f4f1f6}
.note{background:#f8f6fa;border-left:4px solid #8a5a9e;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0} figcaption{color:#555;font-size:.92em} img{max-width:100%;image-rendering:pixelated}
.legend span{display:inline-block;margin-right:1.2em}
.sw{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-right:.3em;border:1px solid #999}
"""


def write_report(ctx) -> Path:
    """``report.html`` of the run in ``ctx`` (a :class:`~segmix.pipeline.stages.Context`)."""
    metrics = json.loads((ctx.run_dir / "metrics.json").read_text())
    parts = _header(ctx, metrics) + _quality(ctx, metrics)
    parts += _figure(
        "Gallery: from labels to tissue maps",
        gallery(ctx, ctx.cfg.report.gallery),
        "Each row is one training tile. Columns: the tile · the true tissue map (never used for training) · class "
        "activation maps of the classes in the tile's label, each in its colour · the pseudo mask made from them · "
        "the final model's prediction.",
        legend=_legend(ctx.spec),
    )
    parts += _figure(
        "Feedback curriculum",
        curriculum_plot(ctx.dir("stage1"), _mastery_line(ctx.cfg.stage1)),
        "The feedback signal after each epoch (segmix: the share of the probe's known cells, held-out cells in "
        "shuffled images, whose label-gated CAM picks their class, ± one standard error, with the number of cells "
        "it counted; segmix-gain: the label-gated CAMs' mIoU against the val masks), the line the rule "
        "compared it with (dashed), its decision (▲ harder: finer patches / more swaps, ▼ easier, ● hold, "
        "○ warm-up) and the shuffle setting the curriculum chose for the next epoch.",
    )
    parts += _figure(
        "What the classifier sees during training",
        mixed_examples(ctx, ctx.cfg.report.mixed),
        "Training tiles after the shuffle (left) and where each patch came from (right, one colour per source tile; "
        "uncoloured parts are the tile's own). Patches keep their position, so tissue stays where it was while its "
        "neighbours change.",
    )
    parts += _run_table(metrics)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>segmix report</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = ctx.run_dir / "report.html"
    write_text(path, page)
    return path


def _mastery_line(cfg) -> float | None:
    """The score level the method's rule advances at, when it has one (its registered ``line``)."""
    rule = METHODS[cfg.mixing.method].curriculum
    line = CURRICULA[rule].line if rule else None
    return cfg.curriculum.knobs(rule)[line] if line else None


def _header(ctx, metrics: dict) -> list[str]:
    cfg, spec = ctx.cfg, ctx.spec
    minutes = sum(metrics.get("seconds", {}).values()) / 60
    test, full = metrics.get("test", {}), metrics.get("fully_supervised")
    ratio = test.get("ratio_to_fully_supervised")
    summary = (
        "From image-level labels alone (which tissues a tile holds), the final model reaches a mean IoU of "
        f"<b>{_pct(test.get('miou'))}%</b> on held-out test tiles"
        + (
            f", <b>{ratio * 100:.0f}%</b> of what the same network reaches when trained on hand-drawn masks "
            f"({_pct(full['miou'])}%)."
            if full and ratio
            else "."
        )
    )
    s1, s2 = cfg.stage1, cfg.stage2
    arch = segmenter_arch(s2.model.arch, s2.model.encoder)  # "auto" named as it runs
    return [
        f"<h1>segmix report</h1><p class='sub'>dataset <b>{html.escape(spec.name)}</b> · "
        f"mixer <b>{html.escape(s1.mixing.method)}</b> · stage 1 {html.escape(s1.model.backbone)}, "
        f"stage 2 {html.escape(arch)} / {html.escape(s2.model.encoder)} · total {minutes:.1f} min</p>",
        f"<div class='note'>{summary} IoU (intersection over union) is the overlap between the predicted and the "
        "true region of a tissue class: 100% is a perfect outline, 50% means the two regions share half of their "
        "combined area.</div>",
    ]


def _quality(ctx, metrics: dict) -> list[str]:
    spec = ctx.spec
    return [
        "<h2>How good are the tissue maps?</h2>",
        metrics_table(metrics, spec.classes),
        f"<figure><img src='{iou_bars(metrics, spec.classes, spec.palette)}'><figcaption>IoU per tissue class. "
        "Pseudo masks are what the classifier's activation maps give on the training tiles; the final model is "
        "trained on them and scored on test tiles it never saw.</figcaption></figure>",
    ]


def _legend(spec) -> str:
    return "".join(
        f"<span><i class='sw' style='background:rgb{tuple(spec.palette[i])}'></i>{html.escape(name)}</span>"
        for i, name in enumerate(spec.classes + ["background / glass"])
    )


def _figure(title: str, picture: str | None, caption: str, legend: str | None = None) -> list[str]:
    """A section with one picture; nothing when there is no picture."""
    if not picture:
        return []
    extra = [f"<p class='legend'>{legend}</p>"] if legend else []
    return [f"<h2>{title}</h2>", *extra, f"<figure><img src='{picture}'><figcaption>{caption}</figcaption></figure>"]


def _run_table(metrics: dict) -> list[str]:
    """Each stage's seconds and its share of the total, a relabel round's maps and training under
    it (the report's own time is not known yet)."""
    total = sum(metrics.get("seconds", {}).values())

    def row(name: str, value: float, tag: str = "td") -> str:
        share = 100 * value / total if total else 0
        return f"<tr><{tag}>{html.escape(name)}</{tag}><{tag}>{value:.1f}</{tag}><{tag}>{share:.0f}%</{tag}></tr>"

    rows = [row(name, value) for name, value in stage_seconds(metrics).items()]
    rows.append(row("total", total, "th"))
    return [
        "<h2>Run</h2>",
        "<table><thead><tr><th>stage</th><th>seconds</th><th>share</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>",
        "<p class='sub'>Config: <code>config.yaml</code>; machine-readable numbers: <code>metrics.json</code>.</p>",
    ]
