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
from segmix.models import load_segmenter, segment, segment_probs, window_grid
from segmix.models.tta import windowed_maps
from segmix.train import Stage2Config, train_segmenter
from segmix.train.augment import dihedral_pair

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def seg_run(module_tmp):
    root = module_tmp("syn2")
    generate(SynthConfig(n_train=16, n_val=3, n_test=3, tile_size=64, seed=5), root, workers=1)
    run = module_tmp("seg")
    cfg = Stage2Config(
        model={"encoder": "resnet18"}, train={"image_size": 64, "batch_size": 8, "epochs": 2}, num_workers=0
    )
    return root, run, train_segmenter(cfg, root, root / "train_gt", run, progress=False)


@pytest.mark.slow
def test_trains_on_masks_keeps_best_and_evaluates(seg_run, tmp_path):
    root, run, path = seg_run
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    trained = load_segmenter(path)
    assert trained.classes == ["TE", "NEC", "LYM", "TAS"] and trained.config.train.image_size == 64
    scores = evaluate(path, root, "test", tmp_path / "ev", overlays=2)
    assert 0 <= scores.miou <= 1 and scores.pixels > 0
    saved = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert saved["miou"] == pytest.approx(scores.miou) and set(saved["per_class"]) == {"TE", "NEC", "LYM", "TAS"}
    assert (
        len(list((tmp_path / "ev" / "pred").iterdir())) == 3
        and len(list((tmp_path / "ev" / "overlays").iterdir())) == 2
    )
    # the best checkpoint holds the best logged val mIoU's epoch, and best.json names it
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    named = json.loads((run / "best.json").read_text())
    assert 0 <= best["score"] <= 1 and (best["epoch"], best["score"]) == (named["epoch"], named["val_miou"])
    import yaml

    from segmix.config.precision import resolve_precision

    assert yaml.safe_load((run / "config.yaml").read_text())["_meta"]["precision"] == resolve_precision(
        "auto", "cpu", training=True
    )


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
    trained = load_segmenter(path)
    model, cfg, spec = trained.network, trained.config, trained.spec
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

    probs = windowed_maps(Position(), torch.rand(1, 3, 37, 23), window=16, stride=5)[0]
    assert probs.shape == (2, 37, 23)
    torch.testing.assert_close(probs.sum(0), torch.ones(37, 23))
    expected = torch.tensor([1.0, np.e]).div(1 + np.e)
    torch.testing.assert_close(probs[:, 5, 5], expected.float())


def test_multi_scale_probabilities_average_rescaled_passes_at_the_image_size():
    class Brightness(torch.nn.Module):
        # per-pixel logits from the pixel's colour: any blur the rescaling adds shows at edges only
        def forward(self, x):
            return torch.cat([x[:, :1] * 0, 4 * x[:, :1]], dim=1)

    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 220  # dark left half, bright right half
    cfg = Stage2Config(train={"image_size": 64})
    one = segment_probs(Brightness(), [image], cfg, "cpu", 2)[0]
    assert torch.equal(segment_probs(Brightness(), [image], cfg, "cpu", 2, scales=(1.0, 1.0))[0], one)
    multi = segment_probs(Brightness(), [image], cfg, "cpu", 2, scales=(0.5, 1.0, 2.0))[0]
    assert multi.shape == (2, 64, 64)  # the image fits a window: each scale whole, resized back
    torch.testing.assert_close(multi.sum(0), torch.ones(64, 64))
    torch.testing.assert_close(multi[:, :, :28], one[:, :, :28])  # flat regions: every scale agrees
    torch.testing.assert_close(multi[:, :, 36:], one[:, :, 36:])
    assert (multi[1, :, 31] - one[1, :, 31]).abs().min() > 1e-3  # at the edge the rescaled passes differ


def test_dihedral_pair_moves_masks_with_images():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).repeat(1, 3, 1, 1)
    y = x[:, 0].long()
    for seed in range(5):
        xa, ya = dihedral_pair(x, y, torch.Generator().manual_seed(seed))
        assert torch.equal(xa[:, 0].long(), ya)


# ---------------------------------------------------------------------------------------------
# Resume keeps one truth: the exported model is the best epoch over the whole run
# ---------------------------------------------------------------------------------------------
def _resume_cfg(epochs: int) -> Stage2Config:
    train = {"image_size": 64, "batch_size": 8, "epochs": epochs}
    return Stage2Config(model={"encoder": "resnet18"}, train=train, num_workers=0, threads=1)


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _logged_val_miou(run) -> dict[int, float]:
    """Epoch -> val mIoU over every attempt's CSV log."""
    import csv

    found = {}
    for path in sorted(run.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("val_miou"):
                found[int(row["epoch"])] = float(row["val_miou"])
    return found


@pytest.fixture(scope="module")
def resume_data(module_tmp):
    root = module_tmp("syn-resume")
    generate(SynthConfig(n_train=24, n_val=4, n_test=2, tile_size=64, seed=3), root, workers=1)
    return root


@pytest.fixture(scope="module")
def uninterrupted(resume_data, module_tmp):
    """Three epochs in one go: the yardstick of every resumed run."""
    run = module_tmp("seg-ref")
    train_segmenter(_resume_cfg(3), resume_data, resume_data / "train_gt", run, progress=False)
    return run


def _check_best(run) -> int:
    """The exported weights are those of the epoch with the best logged val mIoU; nothing stale."""
    logged = _logged_val_miou(run)
    best = json.loads((run / "best.json").read_text())
    assert best["epoch"] == max(logged, key=logged.get) and best["val_miou"] == pytest.approx(max(logged.values()))
    saved = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert saved["epoch"] == best["epoch"]
    assert _same_weights(_weights(run / "segmenter.pt"), saved["state_dict"])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    return best["epoch"]


@pytest.mark.slow
def test_more_epochs_after_a_finished_run_export_the_best_of_all(resume_data, tmp_path):
    run = tmp_path / "grow"
    train_segmenter(_resume_cfg(1), resume_data, resume_data / "train_gt", run, progress=False)
    first = _weights(run / "segmenter.pt")
    (run / "checkpoints" / "best-v1.ckpt").write_bytes(b"left by Lightning's ModelCheckpoint")
    train_segmenter(_resume_cfg(3), resume_data, resume_data / "train_gt", run, progress=False)
    best = _check_best(run)
    assert sorted(_logged_val_miou(run)) == [0, 1, 2]
    if best == 0:  # the first attempt's only epoch stayed the best: its weights, not the last epoch's
        assert _same_weights(_weights(run / "segmenter.pt"), first)
    else:
        assert not _same_weights(_weights(run / "segmenter.pt"), first)


@pytest.mark.slow
def test_crash_between_last_and_best_checkpoint_then_rerun_matches_uninterrupted(
    resume_data, uninterrupted, tmp_path, monkeypatch
):
    from segmix.train.runtime import BestCheckpoint

    run, real, calls = tmp_path / "crash", BestCheckpoint._write, []

    def crash_on_second_best(self, module):  # the first new best after epoch 0: last.ckpt is already written
        calls.append(self.epoch)
        if len(calls) == 2:
            raise RuntimeError("killed")
        real(self, module)

    monkeypatch.setattr(BestCheckpoint, "_write", crash_on_second_best)
    with pytest.raises(RuntimeError, match="killed"):
        train_segmenter(_resume_cfg(3), resume_data, resume_data / "train_gt", run, progress=False)
    monkeypatch.setattr(BestCheckpoint, "_write", real)
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    stale = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    assert stale < killed_at == calls[1]  # last.ckpt names a best epoch that best.ckpt does not hold
    train_segmenter(_resume_cfg(3), resume_data, resume_data / "train_gt", run, progress=False)
    assert _check_best(run) == _check_best(uninterrupted)
    assert _same_weights(_weights(run / "segmenter.pt"), _weights(uninterrupted / "segmenter.pt"))


@pytest.mark.slow
def test_crash_after_the_first_epoch_then_rerun_matches_uninterrupted(resume_data, uninterrupted, tmp_path):
    import lightning as L

    class CrashAfterEpoch0(L.Callback):  # runs after last.ckpt and best.ckpt of epoch 0
        def on_train_epoch_end(self, trainer, module):
            raise RuntimeError("killed")

    run = tmp_path / "crash0"
    with pytest.raises(RuntimeError, match="killed"):
        train_segmenter(
            _resume_cfg(3),
            resume_data,
            resume_data / "train_gt",
            run,
            progress=False,
            extra_callbacks=[CrashAfterEpoch0()],
        )
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    train_segmenter(_resume_cfg(3), resume_data, resume_data / "train_gt", run, progress=False)
    assert sorted(_logged_val_miou(run)) == [0, 1, 2]  # epochs 1 and 2 trained after the resume
    assert _check_best(run) == _check_best(uninterrupted)
    assert _same_weights(_weights(run / "segmenter.pt"), _weights(uninterrupted / "segmenter.pt"))


@pytest.mark.slow
def test_sigkill_during_train_seg_then_rerun_matches_uninterrupted(resume_data, uninterrupted, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    args = [sys.executable, "-m", "segmix.cli", "train-seg", "--data", str(resume_data)]
    args += ["--masks", str(resume_data / "train_gt"), "--out", str(run), "--set", "model.encoder=resnet18"]
    for key, value in [("image_size", 64), ("batch_size", 8), ("epochs", 3)]:
        args += ["--set", f"train.{key}={value}"]
    args += ["--set", "num_workers=0", "--set", "threads=1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = run / "checkpoints" / "last.ckpt", time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "train-seg finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "segmenter.pt").exists()
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _check_best(run) == _check_best(uninterrupted)
    assert _same_weights(_weights(run / "segmenter.pt"), _weights(uninterrupted / "segmenter.pt"))


def test_keys_of_removed_experiments_load_from_model_files_and_are_refused_in_configs():
    from segmix.config import load_config
    from segmix.config.stages import upgrade_flat_config
    from segmix.errors import ConfigError
    from segmix.pipeline import RunConfig

    written = Stage2Config().model_dump(mode="json")  # as a model file of the version before wrote it
    written |= {"loss": {"pseudo": "ce", "q": 0.7, "dice_weight": 0.0}, "self_training": {"start": None}}
    written |= {"mixing": {"method": "none", "patch_size": 28}}
    written["model"]["start_from"] = "weights"
    assert Stage2Config.model_validate(upgrade_flat_config(written, Stage2Config)) == Stage2Config()
    removed = ["stage2.mixing.method=shuffle", "stage2.model.start_from=classifier", "stage2.loss.dice_weight=1"]
    for key in [*removed, "stage1.patch_pool.share=0.5"]:
        with pytest.raises(ConfigError, match=f"--set {key}: .*removed: an experiment that lost"):
            load_config(RunConfig, None, [key])
