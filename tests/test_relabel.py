"""Relabelling: a segmenter's label-gated predictions on the training tiles as the next round's
masks (segmix.pseudo.relabel, ``segmix relabel``, ``relabel.rounds`` in ``segmix run``)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segmix.data.dataset import TileDataset
from segmix.data.io import read_image, read_mask, write_image
from segmix.data.spec import PRESETS, resolve_spec
from segmix.data.tissue import tissue_mask
from segmix.errors import ModelFileError
from segmix.models import create_segmenter, load_segmenter, save_segmenter, segment_probs
from segmix.pseudo import CamConfig
from segmix.pseudo.relabel import RelabelConfig, relabel_masks
from segmix.train import Stage2Config
from tests.conftest import make_tree
from tests.test_cli_user_errors import assert_user_error, digest, segmix

CAMS = CamConfig(num_workers=0, batch_size=3)


@pytest.fixture
def world(tmp_path):
    """A luad-shaped tree (glass is background) with a white corner on every train tile, tiles of
    the window size and larger (sliding window), and a small random segmenter."""
    data = make_tree(tmp_path / "d", "luad-histoseg", n_train=6, sizes=((64, 64), (80, 72)))
    for path in (data / PRESETS["luad-histoseg"].splits.train).glob("*.png"):
        image = read_image(path)
        image[:12, :12] = 250
        write_image(path, image)
    spec = resolve_spec(data)
    torch.manual_seed(0)
    model = create_segmenter("auto", "resnet18", spec.num_indices)
    save_segmenter(model.state_dict(), Stage2Config(train={"image_size": 64}), spec, tmp_path / "s.pt")
    return data, spec, tmp_path / "s.pt"


def test_masks_are_the_label_gated_argmax_with_glass_as_background(world, tmp_path):
    data, spec, seg = world
    scores = relabel_masks(seg, data, tmp_path / "o", cams=CAMS, spec=spec)
    assert scores is None  # no train_gt: nothing to score
    trained = load_segmenter(seg)
    model, cfg = trained.network, trained.config
    tiles = TileDataset(data, "train", spec, with_masks=False)
    scales = RelabelConfig().scales  # the default, from its one source
    assert len(list((tmp_path / "o" / "masks").glob("*.png"))) == len(tiles) == 6
    for item in tiles:
        mask = read_mask(tmp_path / "o" / "masks" / f"{Path(item['name']).stem}.png", spec.num_indices)
        probs = segment_probs(model, [item["image"]], cfg, "cpu", spec.num_indices, scales=scales)[0]
        labelled = torch.from_numpy(item["label"]).bool()[:, None, None]
        gated = probs[: spec.num_classes].masked_fill(~labelled, -1).argmax(0).numpy()
        glass = ~tissue_mask(item["image"], CAMS.white, CAMS.saturation)
        assert glass[:12, :12].all()
        assert np.array_equal(mask, np.where(glass, spec.background_index, gated))
        assert set(np.unique(mask[~glass])) <= set(np.flatnonzero(item["label"]))
    saved = yaml.safe_load((tmp_path / "o" / "relabel_config.yaml").read_text())
    assert saved["_meta"]["segmenter"] == str(seg) and saved["scales"] == scales and saved["split"] == "train"


def test_scales_give_the_gated_argmax_of_the_multi_scale_probabilities(world, tmp_path):
    data, spec, seg = world
    relabel_masks(seg, data, tmp_path / "o", cams=CAMS, spec=spec, scales=[0.75, 1.0, 1.5])
    trained = load_segmenter(seg)
    model, cfg = trained.network, trained.config
    changed = 0
    for item in TileDataset(data, "train", spec, with_masks=False):
        mask = read_mask(tmp_path / "o" / "masks" / f"{Path(item['name']).stem}.png", spec.num_indices)
        probs = segment_probs(model, [item["image"]], cfg, "cpu", spec.num_indices, scales=(0.75, 1.0, 1.5))[0]
        gated = probs[: spec.num_classes].masked_fill(~torch.from_numpy(item["label"]).bool()[:, None, None], -1)
        glass = ~tissue_mask(item["image"], CAMS.white, CAMS.saturation)
        assert np.array_equal(mask, np.where(glass, spec.background_index, gated.argmax(0).numpy()))
        one = segment_probs(model, [item["image"]], cfg, "cpu", spec.num_indices)[0][: spec.num_classes]
        changed += int((one.argmax(0).numpy() != probs[: spec.num_classes].argmax(0).numpy()).sum())
    assert changed > 0  # the scales change some pixels' most probable class
    assert yaml.safe_load((tmp_path / "o" / "relabel_config.yaml").read_text())["scales"] == [0.75, 1.0, 1.5]


def test_a_segmenter_of_other_classes_is_refused(world, tmp_path):
    data, spec, _ = world
    other = PRESETS["bcss-wsss"]
    model = create_segmenter("auto", "resnet18", other.num_indices)
    save_segmenter(model.state_dict(), Stage2Config(train={"image_size": 64}), other, tmp_path / "b.pt")
    with pytest.raises(ModelFileError, match="trained on classes"):
        relabel_masks(tmp_path / "b.pt", data, tmp_path / "o", cams=CAMS, spec=spec)


@pytest.mark.slow
def test_cli_relabel_writes_masks_and_refuses_a_bad_model_in_one_line(world, tmp_path):
    data, _, seg = world
    r = segmix("relabel", "--checkpoint", seg, "-d", data, "-o", tmp_path / "o", "--set", "num_workers=0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "o" / "masks").glob("*.png"))) == 6
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    before = digest(tmp_path)
    r = segmix("relabel", "--checkpoint", bad, "-d", data, "-o", tmp_path / "o", cwd=tmp_path)
    assert_user_error(r, "bad.pt")
    assert digest(tmp_path) == before  # the earlier masks are kept


@pytest.mark.slow
def test_segmix_run_rounds_train_on_relabelled_masks_and_evaluate_the_last_round(tmp_path):
    from segmix.eval import evaluate
    from segmix.pipeline import run_pipeline
    from segmix.pipeline.layout import run_segmenter
    from tests.test_pipeline import tiny_config

    run = tmp_path / "r"
    run_pipeline(tiny_config("relabel.rounds=0"), run, progress=False, until="stage2")
    upstream = {s: (run / s / ".done.json").read_text() for s in ("stage1", "cams", "stage2")}
    metrics = run_pipeline(tiny_config("relabel.rounds=2"), run, progress=False)
    assert {s: (run / s / ".done.json").read_text() for s in upstream} == upstream  # not re-run
    for r in (1, 2):
        assert len(list((run / "relabel" / f"round{r}" / "maps" / "masks").glob("*.png"))) == 24
        assert 0 <= metrics["relabel"][f"round{r}"]["masks"]["miou"] <= 1  # scored on train_gt
    final = run / "relabel" / "segmenter.pt"
    assert run_segmenter(run) == final
    assert final.read_bytes() == (run / "relabel" / "round2" / "segmenter.pt").read_bytes()
    assert metrics["test"]["miou"] == evaluate(final, run / "data", "test", tmp_path / "e").miou
    assert "Round 2 masks" in (run / "report.html").read_text()
    # a round is a stage: killed during its stage 2, it resumes with its maps kept, earlier rounds skipped
    kept = {p: p.stat().st_mtime_ns for p in [*(run / "relabel" / "round2" / "maps").rglob("*"), final]}
    kept[run / "relabel" / "round1" / "segmenter.pt"] = (run / "relabel" / "round1" / "segmenter.pt").stat().st_mtime_ns
    for marker in (run / "relabel" / "round2" / ".done.json", run / "relabel" / ".done.json"):
        marker.unlink()
    resumed = run_pipeline(tiny_config("relabel.rounds=2"), run, progress=False, until="evaluate")
    assert {p: p.stat().st_mtime_ns for p in kept if p != final} == {p: t for p, t in kept.items() if p != final}
    assert resumed["relabel"]["round2"]["masks"] == metrics["relabel"]["round2"]["masks"]
    assert final.read_bytes() == (run / "relabel" / "round2" / "segmenter.pt").read_bytes()
    # back to no rounds: the rounds are moved aside and stage 2's model is the final one again
    metrics = run_pipeline(tiny_config("relabel.rounds=0"), run, progress=False, until="evaluate")
    assert "relabel" not in metrics and run_segmenter(run) == run / "stage2" / "segmenter.pt"
    assert len(list(run.glob("relabel.stale-*"))) == 1
