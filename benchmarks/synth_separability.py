"""Is the synthetic benchmark solvable by mean colour alone? (It must not be.)

Two per-pixel classifiers, same model (quadratic discriminant analysis), trained on tiles of
one seed and tested on tiles of another, tissue pixels only:

- colour: the mean RGB of the pixel's 15x15 neighbourhood;
- texture: that, plus local contrast, edge energy, difference-of-Gaussian (blob) energy at
  three scales, dark-nucleus share and structure-tensor coherence (fibre alignment).

Run: ``python benchmarks/synth_separability.py [--tiles 60]``; prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score

from segmix.data.synth import SynthConfig, render_tile

WINDOW = 15


def colour_features(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float: neighbourhood mean colour."""
    rgb = image.astype(np.float64) / 255.0
    return np.stack([ndimage.uniform_filter(rgb[..., c], WINDOW) for c in range(3)], -1)


def texture_features(image: np.ndarray) -> np.ndarray:
    """(H, W, F) float: mean colour plus texture and morphology statistics."""
    gray = image.astype(np.float64).mean(-1) / 255.0
    mean = lambda x: ndimage.uniform_filter(x, WINDOW)  # noqa: E731
    feats = [colour_features(image)]
    feats.append(np.sqrt(np.clip(mean(gray**2) - mean(gray) ** 2, 0, None))[..., None])
    gy, gx = ndimage.sobel(gray, 0), ndimage.sobel(gray, 1)
    feats.append(mean(np.hypot(gx, gy))[..., None])
    for s in (1.0, 2.0, 4.0):
        dog = ndimage.gaussian_filter(gray, s) - ndimage.gaussian_filter(gray, 2 * s)
        feats.append(mean(dog**2)[..., None] ** 0.5)
    feats.append(mean((gray < np.percentile(gray, 25)).astype(np.float64))[..., None])
    jxx, jyy, jxy = mean(gx * gx), mean(gy * gy), mean(gx * gy)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-8)
    feats.append(coherence[..., None])
    return np.concatenate(feats, -1)


def pixel_set(seed: int, tiles: int, per_tile: int, extract, preset: str = "default") -> tuple[np.ndarray, np.ndarray]:
    cfg = SynthConfig(seed=seed, preset=preset)
    k = len(cfg.classes)
    xs, ys = [], []
    pick = np.random.default_rng(seed + 99)
    for i in range(tiles):
        image, mask = render_tile(np.random.default_rng([seed, 0, i]), cfg)
        f = extract(image)
        idx = np.flatnonzero(mask.ravel() < k)
        idx = pick.choice(idx, size=min(per_tile, idx.size), replace=False)
        xs.append(f.reshape(-1, f.shape[-1])[idx])
        ys.append(mask.ravel()[idx])
    return np.concatenate(xs), np.concatenate(ys)


def separability(tiles: int = 60, per_tile: int = 400, preset: str = "default") -> dict[str, float]:
    """Balanced pixel accuracy on held-out tiles, per feature set."""
    out = {}
    for name, extract in (("colour", colour_features), ("texture", texture_features)):
        xtr, ytr = pixel_set(1, tiles, per_tile, extract, preset)
        xte, yte = pixel_set(2, tiles, per_tile, extract, preset)
        clf = QuadraticDiscriminantAnalysis(reg_param=1e-3).fit(xtr, ytr)
        out[name] = float(balanced_accuracy_score(yte, clf.predict(xte)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=60)
    ap.add_argument("--presets", default="default,hard", help="synth presets, comma separated")
    args = ap.parse_args()
    presets = args.presets.split(",")
    scores = {p: separability(args.tiles, preset=p) for p in presets}
    print("| pixel classifier (QDA) | " + " | ".join(f"balanced accuracy, {p} (chance 0.25)" for p in presets) + " |")
    print("|---|" + "---|" * len(presets))
    for name in ("colour", "texture"):
        print(f"| {name} | " + " | ".join(f"{scores[p][name]:.3f}" for p in presets) + " |")


if __name__ == "__main__":
    main()
