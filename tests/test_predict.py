"""Prediction on images and whole slides: reading, tissue skipping, stitching, areas, GeoJSON."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from segmix.data.synth import SynthConfig, dataset_spec
from segmix.errors import DatasetError
from segmix.infer import choose_level, open_slide, predict_image, predict_slide
from segmix.models.trained import Segmenter
from segmix.train import Stage2Config

SHARED_SLIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SPEC = dataset_spec(SynthConfig())
RED, BLUE, GLASS = (200, 40, 40), (40, 40, 200), (248, 248, 248)


class ColourModel(torch.nn.Module):
    """A stand-in segmenter with a known answer: red -> class 0 (TE), blue -> class 2 (LYM)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-10.0)
            self.conv.bias[0] = self.conv.bias[2] = 0.0
            self.conv.weight[0, 0, 0, 0], self.conv.weight[0, 2, 0, 0] = 1.0, -1.0
            self.conv.weight[2, 0, 0, 0], self.conv.weight[2, 2, 0, 0] = -1.0, 1.0

    def forward(self, x):
        return self.conv(x)


def make_slide(path: Path, width=1024, height=768, mpp=0.5, downsample=2) -> np.ndarray:
    """Pyramidal tiled TIFF: top 2/3 red (left half) and blue (right half), bottom third glass;
    level 1 is ``downsample`` times coarser."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GLASS
    img[: 2 * height // 3, : width // 2] = RED
    img[: 2 * height // 3, width // 2 :] = BLUE
    res = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, tile=(128, 128), photometric="rgb", subifds=1, resolution=res, resolutionunit="CENTIMETER")
        tw.write(img[::downsample, ::downsample], tile=(128, 128), photometric="rgb", subfiletype=1)
    return img


def test_pyramidal_tiff_reader_levels_mpp_and_regions(tmp_path):
    img = make_slide(tmp_path / "s.tif")
    r = open_slide(tmp_path / "s.tif")
    assert r.level_dimensions == [(1024, 768), (512, 384)] and r.level_downsamples == [1.0, 2.0]
    assert r.mpp == pytest.approx(0.5)
    region = r.read_region(0, 1000, 500, 64, 64)  # runs past the right edge: white there
    assert region.shape == (64, 64, 3) and (region[:, 30:] == 255).all()
    np.testing.assert_array_equal(region[:, :24], img[500:564, 1000:1024])
    assert choose_level(r, mpp=1.0) == 1 and choose_level(r, mpp=0.4) == 0 and choose_level(r) == 0
    assert choose_level(r, mpp=0.9) == 0 and choose_level(r, mpp=1.01) == 1  # at or finer than the target
    r.close()


def test_slide_prediction_areas_and_polygons_match_the_layout(tmp_path):
    make_slide(tmp_path / "s.tif")
    cfg = Stage2Config(train={"image_size": 64})
    res = predict_slide(ColourModel(), cfg, SPEC, tmp_path / "s.tif", tmp_path / "out", level=0, map_size=256)
    assert res.tiles_run < res.tiles_total  # glass-only tiles skipped
    rows = {r["class"]: r for r in csv.DictReader((tmp_path / "out" / "s_areas.csv").open())}
    # 1024 x 512 px of each colour... no: 512 x 512 px each, at 0.5 um/px -> 0.0655 mm^2
    expected = 512 * 512 * 0.25e-6
    assert float(rows["TE"]["area_mm2"]) == pytest.approx(expected, rel=0.03)
    assert float(rows["LYM"]["area_mm2"]) == pytest.approx(expected, rel=0.03)
    assert float(rows["TE"]["percent_of_tissue"]) == pytest.approx(50, abs=1.5)
    assert int(rows["NEC"]["pixels"]) == 0 and int(rows["TAS"]["pixels"]) == 0
    gj = json.loads((tmp_path / "out" / "s.geojson").read_text())
    names = {f["properties"]["classification"]["name"]: f for f in gj["features"]}
    assert set(names) == {"TE", "LYM"}
    pts = np.array([p for poly in names["TE"]["geometry"]["coordinates"] for ring in poly for p in ring])
    assert pts[:, 0].min() < 10 and abs(pts[:, 0].max() - 512) < 10 and abs(pts[:, 1].max() - 512) < 10
    summary = json.loads((tmp_path / "out" / "s_summary.json").read_text())
    assert summary["level"] == 0 and summary["map_downsample"] == 4
    assert (tmp_path / "out" / "s_classmap.png").is_file() and (tmp_path / "out" / "s_overlay.png").is_file()


def test_plain_image_prediction_writes_mask_overlay_and_areas(tmp_path):
    from segmix.data.io import read_mask, write_image

    img = np.empty((80, 96, 3), np.uint8)
    img[:, :48] = RED
    img[:, 48:] = BLUE
    write_image(tmp_path / "tile.png", img)
    model = Segmenter(ColourModel(), Stage2Config(train={"image_size": 64}), SPEC)
    predict_image(model, tmp_path / "tile.png", tmp_path / "o")
    mask = read_mask(tmp_path / "o" / "tile_mask.png", 5)
    assert (mask[:, :40] == 0).all() and (mask[:, 56:] == 2).all()
    rows = {r["class"]: r for r in csv.DictReader((tmp_path / "o" / "tile_areas.csv").open())}
    assert float(rows["TE"]["percent_of_tissue"]) == pytest.approx(50, abs=2)


def test_unreadable_slide_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    with pytest.raises(DatasetError, match="broken.svs"):
        open_slide(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        open_slide(tmp_path / "missing.tif")


@pytest.mark.skipif(not SHARED_SLIDE.is_file(), reason="../shared/data/slides not present (fresh clone)")
def test_real_svs_through_openslide(tmp_path):
    r = open_slide(SHARED_SLIDE)
    assert type(r).__name__ == "OpenSlideReader" and r.level_dimensions[0] == (2220, 2967)
    assert r.mpp == pytest.approx(0.499, abs=0.01)
    r.close()
    res = predict_slide(
        ColourModel(), Stage2Config(train={"image_size": 112}), SPEC, SHARED_SLIDE, tmp_path, mpp=0.5, map_size=512
    )
    assert res.level == 0 and res.mpp_read == pytest.approx(0.499, abs=0.01)  # within 2 %: read as it is
    assert 0 < res.tiles_run < res.tiles_total
    rows = list(csv.DictReader((tmp_path / "CMU-1-Small-Region_areas.csv").open()))
    tissue_mm2 = sum(float(r["area_mm2"]) for r in rows if r["class"] != "background")
    total_mm2 = 2220 * 2967 * (0.499e-3) ** 2
    assert 0.2 * total_mm2 < tissue_mm2 < 0.95 * total_mm2


def test_cohort_with_a_corrupt_slide_killed_after_the_first_and_resumed(tmp_path, monkeypatch):
    import segmix.infer.cohort as cohort
    from segmix.infer import predict_cohort, prediction_inputs

    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("a", "c"):
        make_slide(folder / f"{name}.tif", width=512, height=384)
    (folder / "b.tif").write_bytes(b"II*\x00 not a tiff at all")
    (tmp_path / "list.txt").write_text("# the cohort\nslides/a.tif\nslides/b.tif\nslides/c.tif  # last\n")
    slides = prediction_inputs([tmp_path / "list.txt"])
    assert [s.name for s in slides] == ["a.tif", "b.tif", "c.tif"]
    calls = []
    real = cohort.predict_slide
    monkeypatch.setattr(cohort, "predict_slide", lambda *a, **k: calls.append(a[3].name) or real(*a, **k))
    cfg, out = Stage2Config(train={"image_size": 64}), tmp_path / "out"

    def killed_after_first(job, status):
        raise KeyboardInterrupt  # as a kill right after the first slide finished

    with pytest.raises(KeyboardInterrupt):
        predict_cohort(ColourModel(), cfg, SPEC, slides, out, on_slide=killed_after_first, level=0, map_size=128)
    assert calls == ["a.tif"] and (out / "a" / "a_summary.json").is_file()
    seen = []
    table = predict_cohort(
        ColourModel(),
        cfg,
        SPEC,
        slides,
        out,
        on_slide=lambda j, s: seen.append((j.slide.name, s)),
        level=0,
        map_size=128,
    )
    assert calls == ["a.tif", "b.tif", "c.tif"]  # a was not predicted twice
    assert seen[0] == ("a.tif", "skipped") and seen[2] == ("c.tif", "done") and seen[1][1] not in ("done", "skipped")
    rows = {Path(r["slide"]).name: r for r in csv.DictReader(table.open())}
    assert set(rows) == {"a.tif", "b.tif", "c.tif"}
    assert rows["a.tif"]["status"] == rows["c.tif"]["status"] == "done"
    assert rows["b.tif"]["status"].startswith("failed:") and "b.tif" in rows["b.tif"]["status"]
    # 256 x 256 px of red (TE) at 0.5 um/px in each small slide
    assert float(rows["c.tif"]["TE_mm2"]) == pytest.approx(256 * 256 * 0.25e-6, rel=0.05)
    assert float(rows["a.tif"]["tissue_mm2"]) == pytest.approx(2 * 256 * 256 * 0.25e-6, rel=0.05)


def test_two_slides_of_one_name_are_refused_before_any_work(tmp_path):
    from segmix.errors import OutputError
    from segmix.infer import plan_cohort

    with pytest.raises(OutputError, match="would both write"):
        plan_cohort([tmp_path / "x" / "s.svs", tmp_path / "y" / "s.tif"], tmp_path / "out")


@pytest.mark.slow
def test_cohort_sharded_over_two_processes_writes_each_slide_once(tmp_path):
    import subprocess

    from segmix.models import create_segmenter, save_segmenter
    from tests.conftest import segmix_under_torchrun

    model_file = tmp_path / "segmenter.pt"
    save_segmenter(
        create_segmenter("auto", "resnet18", 5).state_dict(), Stage2Config(train={"image_size": 64}), SPEC, model_file
    )
    for name in ("a", "c", "d"):
        make_slide(tmp_path / f"{name}.tif", width=256, height=192)
    (tmp_path / "b.tif").write_bytes(b"not a slide")
    (tmp_path / "list.txt").write_text("a.tif\nb.tif\nc.tif\nd.tif\n")
    cmd = segmix_under_torchrun(
        2,
        29531,
        "predict",
        "--checkpoint",
        str(model_file),
        str(tmp_path / "list.txt"),
        "--out",
        str(tmp_path / "out"),
        "--level",
        "0",
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode != 0 and "1 of 4 slides could not be predicted" in r.stderr, r.stderr[-2000:]
    said = [line for line in r.stderr.splitlines() if line.endswith(": done") or ".tif: " in line]
    for name in ("a", "c", "d"):  # predicted by exactly one process
        assert sum(line.startswith(str(tmp_path / f"{name}.tif") + ": done") for line in said) == 1, said
        assert (tmp_path / "out" / name / f"{name}_summary.json").is_file()
    rows = {Path(row["slide"]).name: row["status"] for row in csv.DictReader((tmp_path / "out" / "cohort.csv").open())}
    assert rows["a.tif"] == rows["c.tif"] == rows["d.tif"] == "done" and rows["b.tif"].startswith("failed:")


def test_slide_is_read_at_the_model_resolution_and_areas_do_not_depend_on_the_scan(tmp_path, caplog):
    """A 0.25 um slide (levels 0.25 / 1.0 um) for a model trained at 0.5 um: read at level 0,
    each window of 2x the model's input resampled to it; areas as on the same tissue at 0.5 um."""
    spec = SPEC.model_copy(update={"mpp": 0.5})
    cfg = Stage2Config(train={"image_size": 64})
    make_slide(tmp_path / "fine.tif", width=1024, height=768, mpp=0.25, downsample=4)
    make_slide(tmp_path / "half.tif", width=512, height=384, mpp=0.5, downsample=2)
    areas = {}
    for name in ("fine", "half"):
        res = predict_slide(ColourModel(), cfg, spec, tmp_path / f"{name}.tif", tmp_path / name, map_size=256)
        summary = json.loads((tmp_path / name / f"{name}_summary.json").read_text())
        assert summary["level"] == 0 and summary["mpp_model"] == 0.5 and summary["mpp_read"] == pytest.approx(0.5)
        with tifffile.TiffFile(tmp_path / name / f"{name}_classmap.tif") as tif:  # the slide as the model saw it
            num, den = tif.pages[0].tags["XResolution"].value
            assert tif.pages[0].shape == (384, 512) and num / den == pytest.approx(1e4 / 0.5)
        rows = {
            r["class"]: float(r["area_mm2"]) for r in csv.DictReader((tmp_path / name / f"{name}_areas.csv").open())
        }
        areas[name] = rows
        assert res.tiles_run > 0
    for cls in ("TE", "LYM"):
        assert areas["fine"][cls] == pytest.approx(areas["half"][cls], rel=0.02)
        assert areas["half"][cls] == pytest.approx(256 * 256 * 0.25e-6, rel=0.05)
    # --mpp overrides the model's resolution, with a warning past 10 %: 1.0 um reads level 1
    with caplog.at_level("WARNING"):
        res = predict_slide(ColourModel(), cfg, spec, tmp_path / "fine.tif", tmp_path / "o1", mpp=1.0, map_size=256)
    assert res.level == 1 and res.mpp_read == pytest.approx(1.0) and "trained at 0.5" in caplog.text


def test_slide_needs_a_resolution_when_the_model_has_none(tmp_path):
    from segmix.errors import ConfigError

    make_slide(tmp_path / "s.tif", width=256, height=192)
    cfg = Stage2Config(train={"image_size": 64})
    with pytest.raises(ConfigError, match="--mpp"):
        predict_slide(ColourModel(), cfg, SPEC, tmp_path / "s.tif", tmp_path / "o")
    with pytest.raises(ConfigError, match="--mpp 0"):
        predict_slide(ColourModel(), cfg, SPEC, tmp_path / "s.tif", tmp_path / "o", mpp=0)
    res = predict_slide(ColourModel(), cfg, SPEC, tmp_path / "s.tif", tmp_path / "o", mpp=0.5, map_size=128)
    assert res.level == 0 and res.mpp_model is None


def test_models_carry_their_training_resolution(tmp_path):
    from segmix.config import Stage1Config
    from segmix.data.spec import load_spec
    from segmix.models import (
        CamClassifier,
        create_segmenter,
        load_payload,
        load_segmenter,
        save_classifier,
        save_segmenter,
    )

    (tmp_path / "dataset.yaml").write_text("preset: luad-histoseg\nmpp: 0.5\n")
    spec = load_spec(tmp_path / "dataset.yaml")
    assert spec.mpp == 0.5 and spec.classes == ["TE", "NEC", "LYM", "TAS"]
    (tmp_path / "bad.yaml").write_text("preset: luad-histoseg\nmpp: 0\n")
    with pytest.raises(DatasetError, match="mpp"):
        load_spec(tmp_path / "bad.yaml")
    save_segmenter(create_segmenter("auto", "resnet18", 5).state_dict(), Stage2Config(), spec, tmp_path / "s.pt")
    assert load_segmenter(tmp_path / "s.pt").mpp == 0.5
    save_classifier(CamClassifier("resnet18", 4), Stage1Config(), spec.classes, tmp_path / "c.pt", mpp=spec.mpp)
    assert load_payload(tmp_path / "c.pt", {"mpp"}, "classifier")["mpp"] == 0.5


def test_class_names_that_look_like_formulas_are_written_as_text(tmp_path):
    from segmix.data.io import write_image
    from segmix.data.text import read_csv

    evil = ['=HYPERLINK("http://example.invalid","x")', "NEC", "+LYM", "@TAS"]
    spec = SPEC.model_copy(update={"classes": evil})
    img = np.empty((64, 64, 3), np.uint8)
    img[:, :32], img[:, 32:] = RED, BLUE
    write_image(tmp_path / "tile.png", img)
    predict_image(
        Segmenter(ColourModel(), Stage2Config(train={"image_size": 64}), spec), tmp_path / "tile.png", tmp_path / "o"
    )
    path = tmp_path / "o" / "tile_areas.csv"
    cells = [c for row in csv.reader(path.open()) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells  # a spreadsheet runs none of them
    assert [r["class"] for r in read_csv(path)][:4] == evil  # and segmix reads the names back as given
