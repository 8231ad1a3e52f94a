"""Stage 2 on a tiny synthetic set: training on masks, best checkpoint, evaluation, sliding windows."""

import json
import logging

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segmix.cli import app
from segmix.data.synth import SynthConfig, generate
from segmix.eval.evaluate import evaluate
from segmix.models import load_segmenter, segment, sliding_window_probs, window_grid
from segmix.train import Stage2Config, train_segmenter
from segmix.train.augment import dihedral_pair

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn2")
    generate(SynthConfig(n_train=16, n_val=3, n_test=3, tile_size=64, seed=5), root, workers=1)
    run = tmp_path_factory.mktemp("seg")
    cfg = Stage2Config(
        model={"encoder": "resnet18"}, train={"image_size": 64, "batch_size": 8, "epochs": 2}, num_workers=0
    )
    return root, run, train_segmenter(cfg, root, root / "train_gt", run, progress=False)


@pytest.mark.slow
def test_trains_on_masks_keeps_best_and_evaluates(seg_run, tmp_path):
    root, run, path = seg_run
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    model, cfg, spec = load_segmenter(path)
    assert spec.classes == ["TE", "NEC", "LYM", "TAS"] and cfg.train.image_size == 64
    scores = evaluate(path, root, "test", tmp_path / "ev", overlays=2)
    assert 0 <= scores.miou <= 1 and scores.pixels > 0
    saved = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert saved["miou"] == pytest.approx(scores.miou) and set(saved["per_class"]) == {"TE", "NEC", "LYM", "TAS"}
    assert (
        len(list((tmp_path / "ev" / "pred").iterdir())) == 3
        and len(list((tmp_path / "ev" / "overlays").iterdir())) == 2
    )
    # the best checkpoint's val mIoU is the best logged one
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    monitored = [v for v in best["callbacks"].values() if isinstance(v, dict) and v.get("monitor") == "val_miou"]
    assert monitored and 0 <= float(monitored[0]["best_model_score"]) <= 1


@pytest.mark.slow
def test_cli_evaluate_and_missing_masks_error(seg_run, tmp_path):
    root, _, path = seg_run
    r = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(path), "--data", str(root), "--split", "val"])
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.output
    r = CliRunner().invoke(
        app, ["train-seg", "--data", str(root), "--masks", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "mask folder does not exist" in r.output


@pytest.mark.slow
def test_variable_size_images_go_through_sliding_windows(seg_run):

    _, _, path = seg_run
    model, cfg, spec = load_segmenter(path)
    images = [
        np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (100, 70), (40, 90))
    ]
    preds = segment(model, images, cfg, "cpu", spec.num_indices)
    assert [p.shape for p in preds] == [(64, 64), (100, 70), (40, 90)]


def test_sliding_window_covers_and_averages():
    assert list(window_grid(10, 10, 4, 3)) == [(y, x) for y in (0, 3, 6) for x in (0, 3, 6)]
    assert list(window_grid(3, 3, 4, 2)) == [(0, 0)]

    class Position(torch.nn.Module):
        # logits = per-pixel constant depending on the channel value: softmax is position-free
        def forward(self, x):
            return torch.cat([x[:, :1] * 0, x[:, :1] * 0 + 1], dim=1)

    probs = sliding_window_probs(Position(), torch.rand(3, 37, 23), 2, window=16, stride=5)
    assert probs.shape == (2, 37, 23)
    torch.testing.assert_close(probs.sum(0), torch.ones(37, 23))
    expected = torch.tensor([1.0, np.e]).div(1 + np.e)
    torch.testing.assert_close(probs[:, 5, 5], expected.float())


def test_dihedral_pair_moves_masks_with_images():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).repeat(1, 3, 1, 1)
    y = x[:, 0].long()
    for seed in range(5):
        xa, ya = dihedral_pair(x, y, torch.Generator().manual_seed(seed))
        assert torch.equal(xa[:, 0].long(), ya)
