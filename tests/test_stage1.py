"""Stage 1 end to end on a tiny synthetic set, resume, and the per-patch CAM loss."""

import csv
import logging
from dataclasses import asdict

import pytest
import torch
import yaml

from segmix.config import ConfigError, load_config
from segmix.data.dataset import TileDataset
from segmix.data.synth import SynthConfig, generate
from segmix.models import load_classifier
from segmix.pseudo import CamConfig, generate_pseudo_masks
from segmix.train import Stage1Config, train_classifier
from segmix.train.losses import patch_cam_loss

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
TINY = [
    "model.backbone=resnet18",
    "train.image_size=64",
    "train.batch_size=8",
    "num_workers=0",
    "ladder.patch_min=16",
    "model.output_stride=16",
]


@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    root = module_tmp("syn")
    generate(SynthConfig(n_train=24, n_val=4, n_test=2, tile_size=64, seed=3, glass_prob=0.6), root, workers=1)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data, module_tmp):
    run = module_tmp("run")
    sets = TINY + ["train.epochs=2", "mixing.method=segmix", "curriculum.mastery.warmup=0"]
    cfg = load_config(Stage1Config, None, sets)
    return run, train_classifier(cfg, tiny_data, run, progress=False)


@pytest.mark.slow
def test_end_to_end_pseudo_masks_are_written_gated_and_scored(tiny_data, trained, tmp_path):
    run, clf = trained
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == 0 and saved["_meta"]["torch"] and saved["_meta"]["classes"] == ["TE", "NEC", "LYM", "TAS"]
    rows = list(csv.DictReader((run / "curriculum.csv").open()))
    assert len(rows) == 2 and {r["action"] for r in rows} <= {"hold", "advance", "back"}
    scores = generate_pseudo_masks(clf, tiny_data, tmp_path / "pm", CamConfig(batch_size=5, scales=[1.0]))
    assert scores is not None and 0.0 <= scores.miou <= 1.0 and scores.pixels > 0
    assert (tmp_path / "pm" / "scores.json").is_file()
    ds = TileDataset(tiny_data, "train")
    masks = sorted((tmp_path / "pm" / "masks").iterdir())
    assert len(masks) == len(ds) == 24
    from segmix.data.io import read_mask

    saw_background = False
    for i in range(len(ds)):
        item = ds[i]
        pm = read_mask(tmp_path / "pm" / "masks" / item["name"], 5)
        present = set(pm.ravel().tolist())
        allowed = {c for c in range(4) if item["label"][c]} | {4, 255}  # 255: left out by the margin
        assert present <= allowed, (item["name"], present)  # gating: absent classes never appear
        saw_background |= 4 in present
    assert saw_background  # glass is background on this dataset


@pytest.mark.slow
def test_margin_leaves_pixels_out_of_the_masks_not_out_of_the_maps_score(tiny_data, trained, tmp_path):
    """The score is the maps' on every pixel (as without a margin); left_out and kept_accuracy
    describe the written masks, recounted here from the files."""
    from segmix.data.io import read_mask

    _, clf = trained
    plain = generate_pseudo_masks(
        clf, tiny_data, tmp_path / "plain", CamConfig(batch_size=5, scales=[1.0], margin=None)
    )
    cut = generate_pseudo_masks(clf, tiny_data, tmp_path / "cut", CamConfig(batch_size=5, scales=[1.0], margin=0.3))
    assert cut.miou == plain.miou and plain.left_out == 0 and cut.left_out > 0
    ds = TileDataset(tiny_data, "train")
    left = right = total = 0
    for i in range(len(ds)):
        item = ds[i]
        written = read_mask(tmp_path / "cut" / "masks" / item["name"], 5)
        everywhere = read_mask(tmp_path / "plain" / "masks" / item["name"], 5)
        assert ((written == everywhere) | (written == 255)).all()  # only ever left out, never changed
        truth = read_mask(tiny_data / "train_gt" / item["name"], 5)
        scored = truth < 4  # glass (index 4) is excluded from the scores on this dataset
        left += int((scored & (written == 255)).sum())
        right += int((scored & (written == truth)).sum())
        total += int(scored.sum())
    assert cut.left_out == pytest.approx(left / total) and cut.kept_accuracy == pytest.approx(right / (total - left))


@pytest.mark.slow
def test_background_policy_off_gives_no_background_channel(tiny_data, trained, tmp_path):
    _, clf = trained
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    spec = yaml.safe_load((data / "dataset.yaml").read_text())
    spec["glass_is_background"] = False
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))
    generate_pseudo_masks(clf, data, tmp_path / "pm", CamConfig(scales=[1.0], flip=False))
    from segmix.data.io import read_mask

    for f in (tmp_path / "pm" / "masks").iterdir():
        assert 4 not in read_mask(f, 5)


@pytest.mark.slow
def test_predicted_labels_and_margin_pixels(tiny_data, trained, tmp_path):
    _, clf = trained
    # every class predicted (threshold 0.01), so each pixel has rivals for the margin to weigh
    cfg = CamConfig(split="test", labels="predicted", threshold=0.01, margin=0.99, scales=[1.0], flip=False)
    scores = generate_pseudo_masks(clf, tiny_data, tmp_path / "pm", cfg)
    from segmix.data.io import read_mask

    values = set()
    for f in (tmp_path / "pm" / "masks").iterdir():
        values |= set(read_mask(f, 5).ravel().tolist())
    assert 255 in values  # pixels whose two labelled CAMs lie within 0.99 are left to stage 2's ignore index
    assert scores is not None and scores.pixels > 0  # the test split has truth masks: scored too


@pytest.mark.slow
def test_resume_restores_curriculum_state(tiny_data, tmp_path):
    base = TINY + ["mixing.method=segmix", "curriculum.mastery.warmup=0", "curriculum.loss.advance=0.0"]
    run = tmp_path / "run"
    train_classifier(load_config(Stage1Config, None, base + ["train.epochs=1"]), tiny_data, run, progress=False)
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert len(ckpt["curriculum"]["history"]) == 1
    # plant a sentinel: only a run that really restores the curriculum from the checkpoint keeps it
    ckpt["curriculum"]["history"][0]["signal"] = 123.0
    torch.save(ckpt, ckpt_path)
    train_classifier(load_config(Stage1Config, None, base + ["train.epochs=2"]), tiny_data, run, progress=False)
    resumed = torch.load(ckpt_path, weights_only=False)
    assert len(resumed["curriculum"]["history"]) == 2
    assert resumed["curriculum"]["history"][0]["signal"] == 123.0
    # the first attempt's logs survive the resume
    assert len(list((run / "logs").glob("version_*/metrics.csv"))) == 2
    # loading the state puts the mixer where the curriculum left it
    from segmix.train.stage1 import Stage1Module

    module = Stage1Module(load_config(Stage1Config, None, base).model_dump(), ["TE", "NEC", "LYM", "TAS"])
    module.on_load_checkpoint({"curriculum": resumed["curriculum"]})
    last = resumed["curriculum"]["history"][-1]
    assert [asdict(r) for r in module.curriculum.history] == resumed["curriculum"]["history"]
    assert (module.mixer.patch_size, module.mixer.ratio) == (last["patch_size"], last["ratio"])


@pytest.mark.slow
def test_classifier_file_round_trips_and_unsafe_pickles_are_refused(trained, tmp_path):
    _, clf = trained
    model, cfg, classes = load_classifier(clf)
    assert classes == ["TE", "NEC", "LYM", "TAS"] and cfg.train.image_size == 64
    logits, maps = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 4) and maps.shape[1] == 4

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil(), "config": {}, "classes": []}, bad)
    with pytest.raises(ValueError, match="unsafe to load"):
        load_classifier(bad)


def test_patch_cam_loss_uses_only_known_entries():
    # 2 images, 2 classes, 8x8 images, 4-px patches -> 2x2 grid; maps at full resolution
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # image 0 single-label, image 1 multi-label
    source = torch.tensor([[[0, 1], [0, 0]], [[1, 1], [0, 1]]])
    maps = torch.zeros(2, 2, 8, 8)
    maps[:, 0] = 10.0  # class 0 strongly on everywhere
    maps[:, 1] = -10.0  # class 1 strongly off everywhere
    # known entries: cells from image 0 -> class 0 positive, class 1 negative (both certain)
    # cells from image 1 -> nothing certain (both classes in its multi-label)
    # every known entry agrees with the maps, so the loss is ~0
    assert patch_cam_loss(maps, source, 4, labels, (8, 8)) < 1e-3
    maps[:, 1] = 10.0  # now class 1 is on where image 0's cells say it is absent
    loss = patch_cam_loss(maps, source, 4, labels, (8, 8))
    # 5 cells come from image 0, each with 2 known entries; half of them are wrong by 10 logits
    assert loss.item() == pytest.approx(10.0 / 2, rel=1e-3)


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: -1\nmethod: mosaic\n")
    with pytest.raises(ConfigError) as err:
        load_config(Stage1Config, f)
    assert "epochs" in str(err.value) and "method" in str(err.value) and str(f) in str(err.value)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Stage1Config, None, ["epochs"])
    cfg = load_config(Stage1Config, None, ["curriculum.loss.backoff=0.3", "devices=2"])
    assert cfg.curriculum.knobs("loss")["backoff"] == 0.3


def test_old_flat_keys_are_refused_with_their_new_place_and_ladders_are_checked():
    from segmix.pipeline import RunConfig

    with pytest.raises(ConfigError, match=r"--set epochs=3: epochs: moved to train\.epochs"):
        load_config(Stage1Config, None, ["epochs=3"])
    with pytest.raises(ConfigError, match=r"stage1\.cell_loss: moved to stage1\.loss\.patch_cam_weight"):
        load_config(RunConfig, None, ["stage1.cell_loss=0"])
    with pytest.raises(ConfigError, match="patch_min 40 is more than half of train.image_size 64"):
        load_config(Stage1Config, None, ["train.image_size=64", "ladder.patch_min=40"])
    with pytest.raises(ConfigError, match=r"curriculum\.fixed\.level 9: the ladder has levels 0\.\.5"):
        load_config(Stage1Config, None, ["curriculum.fixed.level=9"])


@pytest.mark.parametrize(
    "key, place",
    [
        ("ladder.fixed_level=2", "ladder.fixed_level: moved to curriculum.fixed.level"),
        ("mixing.label_mix=area", "mixing: label_mix: moved to mixing.segmix.label_mix"),
        ("curriculum.mastery=0.8", "curriculum: mastery: moved to curriculum.mastery.mastery"),
        ("curriculum.mastery.patience=1", "curriculum: mastery.patience: removed: an experiment that lost"),
        ("mixing.replay=0.5", "mixing: replay: removed: an experiment that lost"),
        ("curriculum.warmup=1", "warmup: moved to curriculum.mastery.warmup / curriculum.gain.warmup / "),
        ("curriculum.mastery.mastry=0.8", r"unknown knob\(s\) mastry; known: warmup, warmup_off, mastery"),
        ("curriculum.masteri.mastery=0.8", "masteri: unknown key; known: signal, probe, probe_cells, fixed, mastery"),
        ("curriculum.mastery.mastery=1.5", "curriculum.mastery: mastery: Input should be less than or equal to 1"),
    ],
)
def test_knobs_of_the_layout_before_the_registry_are_refused_with_their_new_place(key, place):
    with pytest.raises(ConfigError, match=place):
        load_config(Stage1Config, None, [key])


def test_each_rules_knobs_live_under_its_name_with_its_defaults():
    from segmix.shuffle import CURRICULA, MIXERS

    cfg = load_config(Stage1Config, None, ["curriculum.gain.drop=0.05", "mixing.segmix.label_mix=area"])
    assert cfg.curriculum.knobs("gain") == {**CURRICULA["gain"].knobs().model_dump(), "drop": 0.05}
    assert cfg.curriculum.knobs("mastery") == CURRICULA["mastery"].knobs().model_dump()
    assert cfg.mixing.knobs("segmix") == {"label_mix": "area"} and cfg.curriculum.knobs("scheduled") == {}
    assert set(cfg.model_dump()["mixing"]) >= {n for n, e in MIXERS.items() if e.knobs.model_fields}


def test_a_boolean_is_not_a_number_and_a_key_given_twice_is_refused(tmp_path):
    from segmix.config.run import RunConfig
    from segmix.data.spec import load_spec
    from segmix.errors import DatasetError

    with pytest.raises(ConfigError, match=r"--set train.epochs=true: train.epochs: expected a number, got true"):
        load_config(Stage1Config, None, ["train.epochs=true"])
    assert load_config(Stage1Config, None, ["augment.dihedral=false"]).augment.dihedral is False  # a real bool
    twice = tmp_path / "twice.yaml"
    twice.write_text("stage1:\n  train: {epochs: 3}\nstage1:\n  train: {lr: 0.01}\n")
    with pytest.raises(ConfigError, match="twice.yaml: cannot read config \\(line 3, column 1: key 'stage1' given"):
        load_config(RunConfig, twice)
    (tmp_path / "dataset.yaml").write_text("preset: luad-histoseg\nmpp: 0.5\nmpp: 1.0\n")
    with pytest.raises(DatasetError, match="'mpp' given twice"):
        load_spec(tmp_path / "dataset.yaml")
