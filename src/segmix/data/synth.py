"""Synthetic H&E-like tissue tiles with exact pixel truth: the project's embedded benchmark.

Tiles are painted in optical-density space: each tissue texture is a pair of stain
concentration maps (haematoxylin ``h``, eosin ``e``), turned into RGB by Beer-Lambert with
per-tile stain vectors, so stain and brightness vary across tiles the way they do across
real slides. The four default textures mimic LUAD-HistoSeg:

- ``TE``  tumour epithelium: large vesicular nuclei (dark rim, paler centre) in nests.
- ``NEC`` necrosis: granular pale debris, blotchy, with small irregular nuclear fragments.
- ``LYM`` lymphocytes: small, dark, round nuclei packed densely.
- ``TAS`` tumour-associated stroma: wavy eosin fibres with elongated nuclei along them.

Their *mean* stain content is deliberately matched (and jittered per tile), so that texture
and nuclear morphology, not mean colour, tell them apart. Regions are a multiplicatively
weighted Voronoi partition under a smooth warp: irregular borders and varied region sizes,
from single-class tiles to tiles with several classes and near-white glass.

Every tile is drawn from its own generator seeded by ``(seed, split, index)``: output is
byte-identical for a seed, whatever the number of worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage, signal

from segmix.data.io import write_image, write_mask, write_text
from segmix.data.labels import format_label
from segmix.data.spec import PRESETS, DatasetSpec, SplitDirs
from segmix.data.synth_config import TISSUES, SynthConfig

Array = np.ndarray
# Ruifrok & Johnston optical-density stain vectors (R, G, B), log10 units.
_H_VEC = np.array([0.65, 0.70, 0.29])
_E_VEC = np.array([0.07, 0.99, 0.11])
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def dataset_spec(cfg: SynthConfig) -> DatasetSpec:
    """The generic dataset description written beside the tiles."""
    k = len(cfg.classes)
    base = PRESETS["luad-histoseg"].palette
    palette = [base[i % 4] for i in range(k)] + [(255, 255, 255)]
    return DatasetSpec(
        name="synthetic",
        classes=list(cfg.classes),
        palette=palette,
        background_index=k,
        exclude_index=k,
        glass_is_background=True,
        label_format="space",
        splits=SplitDirs(train="train", train_gt="train_gt", val="val", test="test"),
    )


# --------------------------------------------------------------------------------------------
# Small pure helpers over arrays
# --------------------------------------------------------------------------------------------
def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple) -> Array:
    """Gaussian-filtered white noise, float64 (H, W), zero mean, unit std."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def ellipse_kernel(radius: float, elongation: float = 1.0, angle: float = 0.0, rim: float = 0.0) -> Array:
    """A soft-edged filled ellipse, float64 (k, k), peak 1; ``rim`` > 0 pales its centre."""
    a, b = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    half = int(np.ceil(max(a, b))) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx * c + yy * s) / a, (-xx * s + yy * c) / b
    r = np.sqrt(u * u + v * v)
    k = 1.0 / (1.0 + np.exp((r - 1.0) * 8.0))
    if rim > 0:
        k -= rim / (1.0 + np.exp((r - 0.6) * 10.0))
    return k


def scatter_nuclei(rng: np.random.Generator, density: Array | float, kernel: Array, shape) -> Array:
    """Nuclei map in [0, 1]: Bernoulli impulses (``density`` per pixel) stamped with ``kernel``."""
    impulses = (rng.random(shape) < density).astype(np.float64)
    return np.clip(signal.fftconvolve(impulses, kernel, mode="same"), 0.0, 1.0)


def _jit(rng: np.random.Generator, spread: float) -> float:
    return float(rng.uniform(1.0 - spread, 1.0 + spread))


# --------------------------------------------------------------------------------------------
# Tissue textures: each returns (h, e) stain concentration maps of the full tile
# --------------------------------------------------------------------------------------------
Texture = Callable[[np.random.Generator, int, float], tuple[Array, Array]]


def tumour(rng: np.random.Generator, n: int, jitter: float) -> tuple[Array, Array]:
    shape = (n, n)
    nests = 1.0 / (1.0 + np.exp(-3.0 * (smooth_noise(rng, shape, n / 10) + 0.3)))
    r = 3.6 * _jit(rng, jitter)  # pixels: nuclei keep their size whatever the tile size
    kern = ellipse_kernel(r, _jit(rng, 0.3), rng.uniform(0, np.pi), rim=0.45)
    nuc = scatter_nuclei(rng, 0.012 * _jit(rng, jitter) * nests, kern, shape)
    chromatin = 1.0 + 0.25 * smooth_noise(rng, shape, 0.7)
    h = 0.12 + 0.85 * nuc * chromatin
    e = (0.30 + 0.06 * smooth_noise(rng, shape, 2.0)) * (1.0 - 0.4 * nuc)
    return h, e


def necrosis(rng: np.random.Generator, n: int, jitter: float) -> tuple[Array, Array]:
    shape = (n, n)
    blotch = smooth_noise(rng, shape, n / 14)
    grain = smooth_noise(rng, shape, 0.8)
    kern = ellipse_kernel(1.3 * _jit(rng, jitter), 1.6, rng.uniform(0, np.pi))
    frag = scatter_nuclei(rng, 0.035 * _jit(rng, jitter), kern, shape)
    frag *= np.clip(1.0 + smooth_noise(rng, shape, 0.6), 0.0, 1.5)  # broken, irregular pieces
    h = np.clip(0.18 + 0.07 * blotch + 0.05 * grain + 0.75 * frag, 0, None)
    e = np.clip(0.36 + 0.10 * blotch + 0.12 * grain, 0.02, None)
    return h, e


def lymphocytes(rng: np.random.Generator, n: int, jitter: float) -> tuple[Array, Array]:
    shape = (n, n)
    kern = ellipse_kernel(2.1 * _jit(rng, jitter / 2), 1.05, 0.0)
    nuc = scatter_nuclei(rng, 0.030 * _jit(rng, jitter), kern, shape)
    h = 0.06 + 0.62 * nuc * (1.0 + 0.1 * smooth_noise(rng, shape, 0.8))
    e = 0.30 + 0.05 * smooth_noise(rng, shape, 1.5)
    return h, e


def stroma(rng: np.random.Generator, n: int, jitter: float) -> tuple[Array, Array]:
    big = int(n * 1.5)
    angle = rng.uniform(0, 180)
    fibres = smooth_noise(rng, (big, big), (0.8, 7.0))
    fibres = ndimage.rotate(fibres, angle, reshape=False, order=1, mode="wrap")
    lo = (big - n) // 2
    fibres = fibres[lo : lo + n, lo : lo + n]
    theta = np.deg2rad(angle)
    kerns = [ellipse_kernel(2.4 * _jit(rng, jitter / 2), 6.0, -theta + d) for d in (-0.25, 0.0, 0.25)]
    nuc = sum(scatter_nuclei(rng, 0.0035 * _jit(rng, jitter), k, (n, n)) for k in kerns)
    nuc = np.clip(nuc, 0, 1)
    h = 0.20 + 0.05 * fibres + 0.75 * nuc
    e = np.clip(0.40 + 0.16 * fibres, 0.05, None) * (1.0 - 0.5 * nuc)
    return h, e


def glass(rng: np.random.Generator, n: int, jitter: float) -> tuple[Array, Array]:
    return 0.01 + 0.005 * smooth_noise(rng, (n, n), 3), 0.02 + 0.008 * smooth_noise(rng, (n, n), 3)


TEXTURES: dict[str, Texture] = dict(zip(TISSUES, (tumour, necrosis, lymphocytes, stroma), strict=True))


# --------------------------------------------------------------------------------------------
# Layout, staining and one tile
# --------------------------------------------------------------------------------------------
def region_layout(rng: np.random.Generator, n: int, region_classes: Array, warp: float, min_share: float) -> Array:
    """Index map (n, n) int64 over ``region_classes`` values: a warped weighted Voronoi.

    Classes holding less than ``min_share`` of the tile are dissolved into their neighbours.
    """
    k = len(region_classes)
    seeds = rng.uniform(0, n, size=(k, 2))
    weights = rng.lognormal(0.0, 0.35, size=k)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    amp = warp * n
    yy = yy + amp * smooth_noise(rng, (n, n), n / 6)
    xx = xx + amp * smooth_noise(rng, (n, n), n / 6)
    dist = np.hypot(yy[None] - seeds[:, 0, None, None], xx[None] - seeds[:, 1, None, None]) / weights[:, None, None]
    while True:
        labels = region_classes[dist.argmin(0)]
        values, counts = np.unique(labels, return_counts=True)
        small = values[counts < min_share * n * n]
        if len(small) == 0 or len(values) == 1:
            return labels
        dist[region_classes == small[0]] = np.inf


def stain(rng: np.random.Generator, h: Array, e: Array, jitter: float) -> Array:
    """Beer-Lambert RGB uint8 (n, n, 3) from concentrations, with per-tile stain variation."""
    hv = np.clip(_H_VEC + rng.normal(0, 0.08 * jitter, 3), 0.05, None)
    ev = np.clip(_E_VEC + rng.normal(0, 0.08 * jitter, 3), 0.02, None)
    hv, ev = hv / np.linalg.norm(hv), ev / np.linalg.norm(ev)
    od = (h * _jit(rng, jitter))[..., None] * hv + (e * _jit(rng, jitter))[..., None] * ev
    white = 255.0 * rng.uniform(0.93, 1.0) * np.array([_jit(rng, 0.02 * (1 + jitter)) for _ in range(3)])
    rgb = white * np.power(10.0, -od) + rng.normal(0, 2.0, od.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def render_tile(rng: np.random.Generator, cfg: SynthConfig) -> tuple[Array, Array]:
    """One tile.

    Returns:
        image uint8 (n, n, 3) and mask uint8 (n, n) holding class indices, K = glass.
    """
    n, k = cfg.tile_size, len(cfg.classes)
    n_cls = 1 if rng.random() < cfg.single_class_prob else int(rng.integers(2, max(2, min(cfg.max_classes, k)) + 1))
    n_cls = min(n_cls, k)
    p = None if cfg.class_weights is None else np.asarray(cfg.class_weights) / np.sum(cfg.class_weights)
    chosen = rng.choice(k, size=n_cls, replace=False, p=p)
    extra = rng.choice(chosen, size=int(rng.integers(0, cfg.extra_regions + 1)))
    region_classes = np.concatenate([chosen, extra])
    if rng.random() < cfg.glass_prob:
        region_classes = np.append(region_classes, k)
    mask = region_layout(rng, n, region_classes, cfg.border_warp, cfg.min_region)
    if (mask == k).all():  # glass swallowed the tissue; keep the biggest tissue seed instead
        return render_tile(rng, cfg)
    h = np.zeros((n, n))
    e = np.zeros((n, n))
    for idx in np.unique(mask):
        texture = glass if idx == k else TEXTURES[cfg.classes[idx]]
        th, te = texture(rng, n, cfg.texture_jitter)
        if cfg.texture_blend > 0 and idx != k and k > 1:
            other = TEXTURES[cfg.classes[(idx + int(rng.integers(1, k))) % k]]
            oh, oe = other(rng, n, cfg.texture_jitter)
            th, te = (
                (1 - cfg.texture_blend) * th + cfg.texture_blend * oh,
                (1 - cfg.texture_blend) * te + cfg.texture_blend * oe,
            )
        sel = mask == idx
        h[sel], e[sel] = th[sel], te[sel]
    return stain(rng, h, e, cfg.stain_jitter), mask.astype(np.uint8)


def tile_name(split: str, index: int, label: Array, style: str) -> str:
    return f"{split}_{index:05d}-{format_label(label, style)}.png"


def _tile_label(mask: Array, k: int) -> Array:
    return (np.bincount(mask.ravel(), minlength=k + 1)[:k] > 0).astype(np.uint8)


def _write_tiles(args: tuple[SynthConfig, DatasetSpec, str, str, list[int]]) -> int:
    cfg, spec, split, root, indices = args
    root_p = Path(root)
    k = len(cfg.classes)
    for i in indices:
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODES[split], i])
        image, mask = render_tile(rng, cfg)
        if split == "train":
            name = tile_name(split, i, _tile_label(mask, k), spec.label_format)
            write_image(root_p / "train" / name, image)
            write_mask(root_p / "train_gt" / name, mask, spec.palette)
        else:
            name = f"{split}_{i:05d}.png"
            write_image(root_p / split / "img" / name, image)
            write_mask(root_p / split / "mask" / name, mask, spec.palette)
    return len(indices)


def generate(
    cfg: SynthConfig,
    out: str | Path,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DatasetSpec:
    """Write the benchmark to ``out`` in the generic layout (``dataset.yaml`` + splits).

    Args:
        cfg: generator options.
        out: output folder; created, and may already hold an earlier run of the same config.
        workers: processes (default: CPU count); the files do not depend on it.
        progress: called with the number of tiles finished after each chunk.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = dataset_spec(cfg)
    jobs = []
    for split, count in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        for lo in range(0, count, 32):
            jobs.append((cfg, spec, split, str(out), list(range(lo, min(lo + 32, count)))))
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for job in jobs:
            done = _write_tiles(job)
            if progress:
                progress(done)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_write_tiles, jobs):
                if progress:
                    progress(done)
    spec.save(out / "dataset.yaml")
    write_text(out / "synth.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return spec
