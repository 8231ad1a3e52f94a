"""Stain normalisation: a known re-staining is undone, the fit travels in the model file."""

import numpy as np
import pytest

from segmix.data.stain import StainNormalizer, fit_stain_normalizer
from segmix.data.synth import SynthConfig, render_tile


def he_tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    cfg = SynthConfig(tile_size=96, glass_prob=0.0, stain_jitter=0.0)
    rng = np.random.default_rng(seed)
    return [render_tile(rng, cfg)[0] for _ in range(n)]


def restain(image: np.ndarray, od_scale=(1.35, 0.8, 1.2)) -> np.ndarray:
    """A known stain change: optical density scaled per RGB channel (another scanner / stain batch)."""
    od = -np.log((image.astype(np.float64) + 1) / 256)
    return np.clip(256 * np.exp(-od * np.asarray(od_scale)) - 1, 0, 255).round().astype(np.uint8)


def mean_colour_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).mean())


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize("od_scale", [(1.35, 0.8, 1.2), (0.7, 1.2, 0.9)])
def test_a_restained_reference_tile_is_brought_back_to_its_stain(method, od_scale):
    for seed in (0, 1):
        reference = he_tiles(1, seed=seed)[0]
        normalizer = StainNormalizer.fit(method, [reference])
        shifted = restain(reference, od_scale)
        before = float(np.abs(shifted.astype(int) - reference).mean())
        after = float(np.abs(normalizer(shifted).astype(int) - reference).mean())
        assert after < 0.6 * before, (method, seed, before, after)


def test_two_stains_of_one_tile_end_up_alike():
    normalizer = StainNormalizer.fit("reinhard", he_tiles(4, seed=1))
    for tile in he_tiles(3, seed=2):
        shifted = restain(tile)
        assert mean_colour_gap(normalizer(shifted), normalizer(tile)) < 0.1 * mean_colour_gap(shifted, tile)


def test_the_fit_round_trips_through_plain_data_and_a_model_file(tmp_path):
    import torch

    from segmix.config import Stage1Config
    from segmix.models import CamClassifier, load_classifier
    from segmix.models.io import save_classifier

    normalizer = StainNormalizer.fit("macenko", he_tiles(2))
    tile = restain(he_tiles(1, seed=5)[0])
    again = StainNormalizer.from_dict(normalizer.to_dict())
    assert np.array_equal(again(tile), normalizer(tile))
    path = tmp_path / "classifier.pt"
    save_classifier(CamClassifier("resnet18", 4), Stage1Config(), ["A", "B", "C", "D"], path, normalizer)
    assert torch.load(path, weights_only=True)["stain"]["method"] == "macenko"
    model, _, _ = load_classifier(path)
    assert np.array_equal(model.stain(tile), normalizer(tile))
    plain, _, _ = load_classifier(_without_stain(tmp_path))
    assert plain.stain is None


def _without_stain(tmp_path):
    from segmix.config import Stage1Config
    from segmix.models import CamClassifier
    from segmix.models.io import save_classifier

    path = tmp_path / "plain.pt"
    save_classifier(CamClassifier("resnet18", 2), Stage1Config(), ["A", "B"], path)
    return path


def test_glass_and_flat_tiles_pass_through_and_fitting_is_deterministic():
    normalizer = StainNormalizer.fit("macenko", he_tiles(2))
    glass = np.full((64, 64, 3), 245, np.uint8)
    assert np.array_equal(normalizer(glass), glass)

    class Tiles(list):
        def __getitem__(self, i):
            return {"image": list.__getitem__(self, i)}

    tiles = Tiles(he_tiles(10))
    a = fit_stain_normalizer("reinhard", None, tiles, count=4)
    b = fit_stain_normalizer("reinhard", None, tiles, count=4)
    assert a.fitted == b.fitted and fit_stain_normalizer("none", None, tiles) is None
    with pytest.raises(ValueError, match="known: macenko, reinhard"):
        StainNormalizer.fit("vahadane", he_tiles(1))
