"""SegMix's feedback: the mastery rule, the held-out cell accuracy, the gain rule on the val
split's mIoU and the class-balanced single-label share of each batch."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch

from segmix.config import CurriculumConfig, load_config
from segmix.eval.metrics import confusion_miou
from segmix.shuffle import (
    METHODS,
    GainCurriculum,
    MasteryCurriculum,
    SegMix,
    build_levels,
    create_method,
)
from segmix.train.data import SingleLabelShare
from segmix.train.losses import (
    cell_hits,
    cell_truth,
    gated_confusion,
    probe_hits,
    probe_truth,
)

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
LEVELS = build_levels([32, 16, 8], 0.25, 0.5, 1)


def test_mastery_rule_advances_on_mastery_holds_while_learning_and_steps_back_on_collapse():
    mixer = SegMix()
    cur = MasteryCurriculum(mixer, LEVELS, mastery=0.9, collapse=0.05, warmup=1)
    assert mixer.ratio == 0.0  # warm-up: shuffle off
    actions = [cur.step(s).action for s in (0.95, 0.80, 0.85, 0.91, 0.70, 0.60, 0.72, 0.66)]
    # warm-up ignores 0.95; 0.80/0.85 hold (learning); 0.91 masters level 0; at level 1, 0.70 sets
    # the best, 0.60 collapses (>= 0.05 below) -> back; at level 0 again 0.72 holds, 0.66 collapses
    # but level 0 cannot step back.
    assert actions == ["warmup", "hold", "hold", "advance", "hold", "back", "hold", "hold"]
    assert [r.level for r in cur.history] == [0, 0, 0, 1, 1, 0, 0, 0]
    assert (mixer.patch_size, mixer.ratio) == (32, 0.25)
    top = MasteryCurriculum(SegMix(), LEVELS, mastery=0.5, warmup=0)
    assert [top.step(1.0).action for _ in range(4)] == ["advance", "advance", "hold", "hold"]
    with pytest.raises(ValueError, match="score in"):
        top.step(1.5)


def test_lookahead_plug_in_advances_when_the_next_level_reads_as_well_and_resumes(bench_module):
    LookaheadCurriculum = bench_module("lookahead").LookaheadCurriculum  # noqa: N806  (a plug-in's class)
    mixer = SegMix()
    cur = LookaheadCurriculum(mixer, LEVELS, tolerance=0.02, collapse=0.05)
    readings = [(0.70, 0.60), (0.74, 0.71), (0.72, 0.72), (0.66, 0.50), (0.60, 0.58), (0.95, None), (0.93, None)]
    actions = [cur.step(s, ahead=a).action for s, a in readings]
    # 0.60 and 0.71 lie more than 0.02 under the level's reading: hold; 0.72 reads as well: advance;
    # at level 1, 0.50 does not: hold; then 0.60 fell to the collapse line, but the next level reads
    # 0.58, within the tolerance: advance comes first; the top level has nothing ahead: it holds
    assert actions == ["hold", "hold", "advance", "hold", "advance", "hold", "hold"]
    assert [r.level for r in cur.history] == [0, 0, 1, 1, 2, 2, 2]
    assert (mixer.patch_size, mixer.ratio) == (8, 0.25)
    assert [r.threshold for r in cur.history] == [pytest.approx(1 - cur.mastery)] * len(readings)
    mastered = LookaheadCurriculum(SegMix(), LEVELS)
    assert mastered.step(0.91, ahead=0.2).action == "advance"  # mastery alone still advances
    assert mastered.step(0.80, ahead=None).action == "hold"  # nothing measured ahead: as mastery
    assert mastered.step(0.70, ahead=0.5).action == "back"  # collapsed at level 1
    b = LookaheadCurriculum(SegMix(), LEVELS)
    b.load_state_dict(mastered.state_dict())
    assert [b.step(s, ahead=0.6).action for s in (0.7, 0.55)] == [
        mastered.step(s, ahead=0.6).action for s in (0.7, 0.55)
    ]
    assert METHODS["segmix-lookahead"].signal() == "cell_accuracy" and cur.reads_ahead
    with pytest.raises(ValueError, match="score in"):
        cur.step(0.5, ahead=1.5)


def test_mastery_state_resumes_with_identical_decisions():
    a = MasteryCurriculum(SegMix(), LEVELS, warmup=0)
    for s in (0.5, 0.95, 0.6, 0.6):
        a.step(s)
    b = MasteryCurriculum(SegMix(), LEVELS, warmup=0)
    b.load_state_dict(a.state_dict())
    assert b.best == a.best == 0.6
    assert [a.step(s) for s in (0.6, 0.5, 0.96)] == [b.step(s) for s in (0.6, 0.5, 0.96)]


def test_segmix_is_the_mastery_rule_on_cell_accuracy_and_segmix_loss_the_loss_rule():
    cfg = CurriculumConfig()
    mastery = cfg.knobs("mastery")
    _, cur = create_method("segmix", LEVELS, curriculum=mastery)
    assert isinstance(cur, MasteryCurriculum) and (cur.mastery, cur.collapse) == (mastery["mastery"], 0.05)
    assert METHODS["segmix"].signal() == "cell_accuracy" and METHODS["segmix-loss"].signal() == "train_loss"
    assert METHODS["segmix"].signal("val_f1") == "val_f1" and METHODS["shuffle-fixed"].signal("val_f1") is None
    _, old = create_method("segmix-loss", LEVELS, curriculum=cfg.knobs("loss"))
    assert old.name == "loss" and old.advance == cfg.knobs("loss")["advance"]


def test_gain_rule_climbs_on_new_bests_and_steps_back_when_a_level_costs_the_score():
    mixer = SegMix()
    cur = GainCurriculum(mixer, LEVELS, drop=0.02, dwell=1, warmup=1)
    assert mixer.ratio == 0.0  # warm-up: shuffle off
    actions = [cur.step(s).action for s in (0.60, 0.65, 0.70, 0.69, 0.66, 0.69, 0.71, 0.72)]
    # warm-up 0.60 is the first best; 0.65 and 0.70 are new bests -> up to level 2; 0.69 is below
    # the best but within drop: hold; 0.66 is 0.04 below the best: back; 0.69 hold; 0.71 a new best:
    # advance; 0.72 at the top level: hold.
    assert actions == ["warmup", "advance", "advance", "hold", "back", "hold", "advance", "hold"]
    assert [r.level for r in cur.history] == [0, 1, 2, 2, 1, 1, 2, 2]
    assert cur.history[2].threshold == pytest.approx(1 - 0.65)  # 1 - the best before the step
    again = GainCurriculum(SegMix(), LEVELS, drop=0.02, warmup=0)
    # the best is kept across levels: after a step back, a level still 0.02 below it steps back again
    assert [again.step(s).action for s in (0.7, 0.8, 0.7, 0.75)] == ["advance", "advance", "back", "back"]
    stuck = GainCurriculum(SegMix(), LEVELS, warmup=0)  # a plateau below the first best holds
    assert [stuck.step(s).action for s in (0.75, 0.74, 0.745, 0.74)] == ["advance", "hold", "hold", "hold"]
    slow = GainCurriculum(SegMix(), LEVELS, dwell=2, warmup=0)
    assert [slow.step(s).action for s in (0.5, 0.6, 0.7, 0.8)] == ["hold", "advance", "hold", "advance"]
    with pytest.raises(ValueError, match="score in"):
        slow.step(1.5)
    with pytest.raises(ValueError, match="dwell"):
        GainCurriculum(SegMix(), LEVELS, dwell=0)


def test_gain_state_resumes_with_identical_decisions():
    a = GainCurriculum(SegMix(), LEVELS, warmup=0, dwell=2)
    for s in (0.5, 0.6, 0.59):  # hold, advance (held 2 steps), hold: one step held at level 1
        a.step(s)
    b = GainCurriculum(SegMix(), LEVELS, warmup=0, dwell=2)
    b.load_state_dict(a.state_dict())
    assert (b.best, b.held) == (a.best, a.held) == (0.6, 1)
    assert [a.step(s) for s in (0.61, 0.5, 0.7)] == [b.step(s) for s in (0.61, 0.5, 0.7)]


def test_segmix_gain_reads_val_miou_with_the_configs_rule():
    cfg = CurriculumConfig(gain={"drop": 0.03, "dwell": 2})
    _, cur = create_method("segmix-gain", LEVELS, curriculum=cfg.knobs("gain"))
    assert isinstance(cur, GainCurriculum) and (cur.drop, cur.dwell) == (0.03, 2)
    assert METHODS["segmix-gain"].signal() == "val_miou"
    default = GainCurriculum(SegMix(), LEVELS)
    keys = ("drop", "dwell", "warmup", "warmup_off")
    assert CurriculumConfig().knobs("gain") == {k: getattr(default, k) for k in keys}


def test_gated_confusion_scores_the_label_gated_argmax_on_tissue_pixels_only():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 0, :, 0] = 5.0  # left column: class 0
    maps[0, 1, :, 1] = 3.0
    maps[0, 2, :, 1] = 9.0  # right column: class 2, which the tile lacks: gated -> class 1
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    masks = torch.tensor([[[0, 1], [1, 255]]])  # 255: glass / ignore, not counted
    conf = gated_confusion(maps, labels, masks)
    # truth 0 -> pred 0 (top left); truth 1 -> pred 1 (top right); truth 1 -> pred 0 (bottom left);
    # the bottom right pixel is glass
    assert conf.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert float(confusion_miou(conf)) == pytest.approx(0.5)  # classes 0 and 1: 1/2 each; 2 never seen


def _maps_for(cells: torch.Tensor, patch: int) -> torch.Tensor:
    """Class maps (B, K, gh, gw) that are constant per grid cell: upsampled, pooled -> the same."""
    return cells.repeat_interleave(patch, -1).repeat_interleave(patch, -2)


def test_cell_hits_counts_informative_swapped_cells_and_their_gated_argmax():
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0]])  # two single-label tiles
    source = torch.tensor([[[0, 1]], [[1, 0]]])  # each image: its own left cell, the other's right
    cells = torch.zeros(2, 3, 1, 2)
    cells[0, 1, 0, 1] = 5.0  # image 0, right cell (from tile 1, class 1): says class 1 -> hit
    cells[1, 1, 0, 1] = 5.0  # image 1, right cell (from tile 0, class 0): says class 1 -> miss
    cells[:, 2] = 9.0  # class 2 is in no label: the gate must ignore it
    hits = cell_hits(_maps_for(cells, 4), source, 4, labels, (4, 8))
    assert hits.tolist() == [1.0, 2.0]  # own cells are not counted
    same = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    assert cell_hits(_maps_for(cells, 4), source, 4, same, (4, 8)).tolist() == [0.0, 0.0]  # nothing to tell apart


def test_cell_truth_is_the_majority_tissue_class_and_minus_one_on_glass():
    masks = torch.full((1, 4, 8), 4, dtype=torch.uint8)  # class 4 = glass (num_classes 4)
    masks[0, :, :3] = 2
    masks[0, 0, 3] = 1
    assert cell_truth(masks, 4, 4).tolist() == [[[2, -1]]]


def test_single_label_share_fills_each_batch_class_balanced_and_repeats_per_epoch():
    labels = np.zeros((40, 3), np.uint8)
    labels[:, :2] = 1  # multi-label tiles...
    labels[[3, 7], :] = [1, 0, 0]  # ...a few single-label ones
    labels[[11], :] = [0, 0, 1]
    sampler = SingleLabelShare(labels, batch_size=8, share=0.25, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 40
    batches = [order[i : i + 8] for i in range(0, 40, 8)]
    assert all(sum(i in (3, 7, 11) for i in b[6:]) == 2 for b in batches)  # the last 2 of each batch
    tail = [i for b in batches for i in b[6:]]
    assert {3, 7} & set(tail) and 11 in tail  # both classes with single-label tiles drawn
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    plain = SingleLabelShare(np.ones((16, 3), np.uint8), 8, 0.5, 0)
    assert sorted(plain) == list(range(16))  # no single-label tiles: a plain shuffle


@pytest.mark.slow
def test_stage1_resumes_its_curriculum_trace(tmp_path):
    from segmix.data.synth import SynthConfig, generate
    from segmix.train import Stage1Config, train_classifier

    data = tmp_path / "data"
    generate(SynthConfig(n_train=24, n_val=8, n_test=2, tile_size=64, seed=3), data, workers=1)
    base = [
        "model.backbone=resnet18",
        "train.image_size=64",
        "train.batch_size=8",
        "num_workers=0",
        "ladder.patch_min=16",
        "curriculum.mastery.warmup=0",
        "curriculum.mastery.mastery=0.01",  # every epoch masters its level
        "mixing.single_share=0.25",
    ]
    run = tmp_path / "run"
    train_classifier(load_config(Stage1Config, None, base + ["train.epochs=1"]), data, run, progress=False)
    train_classifier(load_config(Stage1Config, None, base + ["train.epochs=2"]), data, run, progress=False)
    trace = list(csv.DictReader((run / "curriculum.csv").open()))
    assert [r["action"] for r in trace] == ["advance", "advance"]  # the first epoch's row came back from the checkpoint
    assert all(0.0 <= float(r["signal"]) <= 1.0 for r in trace)  # the cell accuracy
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["curriculum"]["level"] == int(trace[-1]["level"])


def test_a_rule_that_reads_ahead_gets_the_probe_at_the_next_level(tmp_path, bench_module):
    bench_module("lookahead")  # the plug-in of benchmarks/ that reads ahead
    from segmix.data.synth import SynthConfig, generate
    from segmix.train import Stage1Config, train_classifier

    data = tmp_path / "data"
    generate(SynthConfig(n_train=16, n_val=8, n_test=2, tile_size=64, seed=4), data, workers=1)
    sets = ["model.backbone=resnet18", "train.image_size=64", "train.batch_size=8", "num_workers=0"]
    sets += ["ladder.patch_min=16", "mixing.method=segmix-lookahead", "train.epochs=2"]
    sets += ["curriculum.lookahead.tolerance=1.0"]  # any reading ahead is good enough: advance each epoch
    run = tmp_path / "run"
    train_classifier(load_config(Stage1Config, None, sets), data, run, progress=False)
    trace = list(csv.DictReader((run / "curriculum.csv").open()))
    probe = list(csv.DictReader((run / "probe.csv").open()))
    assert [r["action"] for r in trace] == ["advance", "advance"] and [r["level"] for r in trace] == ["1", "2"]
    assert all(0.0 <= float(r["ahead"]) <= 1.0 for r in probe)  # measured at levels 1 and 2
    assert [float(r["signal"]) for r in trace] == pytest.approx([float(r["accuracy"]) for r in probe])


def test_stage1_logs_val_miou_and_segmix_gain_steps_on_it(tmp_path):
    from segmix.data.synth import SynthConfig, generate
    from segmix.train import Stage1Config, train_classifier

    data = tmp_path / "data"
    generate(SynthConfig(n_train=16, n_val=8, n_test=2, tile_size=64, seed=4), data, workers=1)
    sets = ["model.backbone=resnet18", "train.image_size=64", "train.batch_size=8", "num_workers=0"]
    sets += ["ladder.patch_min=16", "mixing.method=segmix-gain", "train.epochs=2", "curriculum.gain.drop=1.0"]
    sets += ["curriculum.gain.warmup=1"]  # off by default; its first reading is still recorded
    run = tmp_path / "run"
    train_classifier(load_config(Stage1Config, None, sets), data, run, progress=False)
    trace = list(csv.DictReader((run / "curriculum.csv").open()))
    metrics = list(csv.DictReader(next((run / "logs").glob("version_*/metrics.csv")).open()))
    logged = [float(r["val_miou"]) for r in metrics if r.get("val_miou")]
    assert len(logged) == 2 and all(0.0 < v <= 1.0 for v in logged)
    assert [float(r["signal"]) for r in trace] == pytest.approx(logged)  # the rule read the val mIoU
    assert [r["action"] for r in trace][0] == "warmup"


def test_report_plots_the_signal_its_line_and_the_decisions(tmp_path):
    import base64

    from segmix.pipeline.figures import compared_line, curriculum_plot
    from segmix.shuffle import read_history_csv, write_history_csv

    cur = MasteryCurriculum(SegMix(), LEVELS, warmup=1)
    for s in (0.7, 0.95, 0.6):
        cur.step(s)
    write_history_csv(cur.history, tmp_path / "curriculum.csv")
    picture = curriculum_plot(tmp_path, mastery=0.9)
    assert base64.b64decode(picture.split(",")[-1])[:4] == b"\x89PNG"
    lines = [compared_line(r) for r in read_history_csv(tmp_path / "curriculum.csv")]
    assert lines[0] is None and lines[1:] == [pytest.approx(cur.mastery)] * 2  # warm-up: nothing compared
    assert curriculum_plot(tmp_path / "missing") is None


def test_probe_truth_from_masks_with_purity_and_from_single_labels_without_masks():
    masks = torch.full((3, 8, 8), 255, dtype=torch.uint8)  # tile 2: no mask
    masks[0, :, :4] = 0  # left cells: class 0 alone
    masks[0, :, 4:] = 1
    masks[0, :, 4] = 0
    masks[0, ::4, 5] = 0  # right cells: 11/16 class 1, under the purity line (0.75)
    masks[1] = 2  # the excluded / background index (K = 2): no tissue
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    truth = probe_truth(masks, labels, 4)
    assert truth[0].tolist() == [[0, -1], [0, -1]]
    assert (truth[1] == -1).all() and (truth[2] == 1).all()  # tile 2: single-label, its class everywhere
    assert cell_truth(masks, 4, 2)[0].tolist() == [[0, 1], [0, 1]]  # majority, no purity


def test_probe_hits_counts_own_and_swapped_cells_of_known_class_in_mixed_images_of_two_classes():
    labels = torch.tensor([[1.0, 1.0, 0], [1.0, 0, 0]])
    truth = torch.tensor([[[0, 1]], [[0, 0]]])  # tile 0: class 0 left, class 1 right; tile 1: class 0
    source = torch.tensor([[[0, 0]], [[1, 1]]])  # no swap: image 1 holds one class only
    cells = torch.zeros(2, 3, 1, 2)
    cells[0, 1, 0, 1] = 5.0  # image 0, right cell says class 1: hit; left cell says class 0 (tie -> 0): hit
    cells[:, 2] = 9.0  # class 2 is in no label: the gate must ignore it
    assert probe_hits(_maps_for(cells, 4), source, 4, labels, truth, (4, 8)).tolist() == [2.0, 2.0]
    source = torch.tensor([[[0, 1]], [[1, 0]]])  # image 1 now holds tile 0's right cell (class 1)
    hits = probe_hits(_maps_for(cells, 4), source, 4, labels, truth, (4, 8))
    # image 0: left hit, right (tile 1's, class 0) says 1: miss; image 1: left (tile 1's, class 0)
    # says 0: hit, right (tile 0's, class 1) says 0: miss
    assert hits.tolist() == [2.0, 4.0]


def test_full_size_val_images_are_cut_into_tiles_and_the_probe_counts_enough_cells(tmp_path, caplog):
    """The WSSS4LUAD layout: a val split of a few large multi-class images with masks."""
    from segmix.data.dataset import TileDataset
    from segmix.data.io import write_image, write_mask
    from segmix.data.synth import SynthConfig, dataset_spec, generate
    from segmix.train import Stage1Config
    from segmix.train.data import MaskedTiles
    from segmix.train.probe import probe_census, report_probe

    data = tmp_path / "d"
    generate(SynthConfig(tile_size=32, n_train=8, n_val=1, n_test=1, seed=0), data, workers=1)
    spec = dataset_spec(SynthConfig())
    for p in (data / "val" / "img").iterdir():
        p.unlink()
    for p in (data / "val" / "mask").iterdir():
        p.unlink()
    rng = np.random.default_rng(0)
    for i in range(3):  # 256 px images of four quadrants, classes 0-3
        mask = np.zeros((256, 256), np.uint8)
        mask[:128, 128:], mask[128:, :128], mask[128:, 128:] = 1, 2, 3
        image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        write_image(data / "val" / "img" / f"big{i}.png", image)
        write_mask(data / "val" / "mask" / f"big{i}.png", mask, spec.palette)
    tiles = TileDataset(data, "val", spec)
    cfg = Stage1Config(train={"image_size": 32, "batch_size": 8}, ladder={"patch_min": 8})
    level = build_levels([16, 8], 0.25, 0.5, 1)[0]
    loader = lambda crop: torch.utils.data.DataLoader(MaskedTiles(tiles, 32, crop_large=crop), batch_size=8)  # noqa: E731
    assert len(MaskedTiles(tiles, 32, crop_large=True)) == 3 * 64
    cut, shrunk = probe_census(cfg, level, loader(True)), probe_census(cfg, level, loader(False))
    assert shrunk <= 12 and cut >= 300  # shrunk: 3 images of 4 cells; cut: 192 tiles, most cells known
    with caplog.at_level(logging.INFO, logger="segmix"):
        report_probe(
            cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"probe_cells": 300})}), loader(True)
        )
        report_probe(cfg, loader(False))
    said = [r.getMessage() for r in caplog.records]
    assert f"feedback probe: {cut} known cells" in said[0] and "under" not in said[0]
    assert f"{shrunk} known cells at the first level, under curriculum.probe_cells=250" in said[1]
