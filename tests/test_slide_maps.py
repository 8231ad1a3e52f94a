"""Whole-slide maps at the resolution read: the pyramidal class map (OpenSlide, tifffile), areas
and polygons from it, probabilities, records."""

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from segmix.infer import predict_slide
from segmix.infer.predict import plan_slide, window_probabilities
from segmix.infer.slide import open_slide
from segmix.models import predict_probs, segmenter_input
from segmix.train import Stage2Config
from tests.test_predict import BLUE, GLASS, RED, SPEC, ColourModel, make_slide

CFG = Stage2Config(train={"image_size": 64})


class BorderModel(torch.nn.Module):
    """A 5x5 convolution with zero padding: a pixel's answer depends on where its window is, so
    overlapping windows must be blended to give the map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 5, 5, padding=2)

    def forward(self, x):
        return self.conv(x)


def in_memory_classmap(model, path, overlap=0.25, map_size=256) -> np.ndarray:
    """The class map computed whole in memory: every window's softmax summed into one array, the
    argmax, background where no window ran or the thumbnail found no tissue."""
    reader = open_slide(path)
    plan = plan_slide(reader, CFG.train.image_size, 0, None, overlap, map_size)
    h, w = plan.full_shape
    sums, counts = torch.zeros(5, h, w), torch.zeros(h, w)
    for x, y, probs in window_probabilities(model, reader, plan, False, 8, torch.device("cpu")):
        ph, pw = min(plan.window, h - y), min(plan.window, w - x)
        sums[:, y : y + ph, x : x + pw] += probs[:, :ph, :pw]
        counts[y : y + ph, x : x + pw] += 1
    reader.close()
    classmap = sums.argmax(0).to(torch.uint8).numpy()
    rows = np.minimum((np.arange(h) / (plan.d * plan.zoom)).astype(int), plan.tissue.shape[0] - 1)
    cols = np.minimum((np.arange(w) / (plan.d * plan.zoom)).astype(int), plan.tissue.shape[1] - 1)
    classmap[(counts == 0).numpy() | ~plan.tissue[rows][:, cols]] = SPEC.background_index
    return classmap


def test_class_map_tiff_opens_in_openslide_and_tifffile_and_equals_the_map_computed_in_memory(tmp_path):
    import openslide

    make_slide(tmp_path / "s.tif", width=1100, height=900)
    model = BorderModel()
    predict_slide(model, CFG, SPEC, tmp_path / "s.tif", tmp_path / "out", level=0, map_size=256)
    path = tmp_path / "out" / "s_classmap.tif"
    with tifffile.TiffFile(path) as tif:
        pages = [p.shape for p in tif.pages]
        level0 = tif.pages[0].asarray()
        x_resolution = tif.pages[0].tags["XResolution"].value
        about = json.loads(tif.pages[0].description)
    assert pages == [(900, 1100), (450, 550), (225, 275), (113, 138)]  # halved until one tile holds it
    assert x_resolution[0] / x_resolution[1] == pytest.approx(1e4 / 0.5)  # pixels per cm at 0.5 um/px
    assert about["values"] == list(SPEC.index_names) and about["mpp"] == pytest.approx(0.5)
    expected = in_memory_classmap(model, tmp_path / "s.tif")
    np.testing.assert_array_equal(level0, expected)
    assert len(np.unique(level0)) >= 3  # a map worth comparing: classes and background
    slide = openslide.OpenSlide(str(path))
    assert slide.level_dimensions == ((1100, 900), (550, 450), (275, 225), (138, 113))
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    rgba = np.asarray(slide.read_region((0, 0), 0, (1100, 900)))
    slide.close()
    colours = np.array(SPEC.palette, np.uint8)[expected]  # the palette is the TIFF's colour map
    np.testing.assert_array_equal(rgba[..., :3], colours)
    pixels = {r["class"]: int(r["pixels"]) for r in csv.DictReader((tmp_path / "out" / "s_areas.csv").open())}
    counted = np.bincount(level0.ravel(), minlength=5)
    assert [pixels[name] for name in SPEC.index_names] == counted.tolist()  # areas are the full map's


def test_areas_and_polygons_keep_a_20_um_structure_the_quick_look_loses(tmp_path):
    """A red (TE) square of 20 um (40 px at 0.5 um/px) in blue tissue: a fraction of a pixel of
    the 2048-px quick look of a large slide, whole in the full-resolution areas and polygons."""
    width, height = 3000, 2000
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BLUE
    img[1000:1040, 1500:1540] = RED
    img[:, 2800:] = GLASS
    with tifffile.TiffWriter(tmp_path / "s.tif", bigtiff=True) as tw:
        tw.write(img, tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    predict_slide(ColourModel(), CFG, SPEC, tmp_path / "s.tif", tmp_path / "out", level=0, map_size=64)
    rows = {r["class"]: r for r in csv.DictReader((tmp_path / "out" / "s_areas.csv").open())}
    assert int(rows["TE"]["pixels"]) == 40 * 40
    assert float(rows["TE"]["area_mm2"]) == pytest.approx(0.02 * 0.02, rel=0.005)
    features = json.loads((tmp_path / "out" / "s.geojson").read_text())["features"]
    te = [f for f in features if f["properties"]["classification"]["name"] == "TE"]
    assert len(te) == 1 and len(te[0]["geometry"]["coordinates"]) == 1
    ring = np.array(te[0]["geometry"]["coordinates"][0][0])
    assert ring.min(0) == pytest.approx([1500.5, 1000.5], abs=1.0)
    assert ring.max(0) == pytest.approx([1539.5, 1039.5], abs=1.0)
    lym = [f for f in features if f["properties"]["classification"]["name"] == "LYM"][0]["geometry"]["coordinates"]
    assert len(lym) == 1 and len(lym[0]) == 2  # one region, the red square its hole, across every band seam


def test_probabilities_pyramid_and_records_cover_the_new_outputs(tmp_path):
    from segmix.infer import predict_cohort

    make_slide(tmp_path / "s.tif", width=512, height=384)
    out = tmp_path / "out"
    said = []

    def run(**args):
        slides = [tmp_path / "s.tif"]
        predict_cohort(ColourModel(), CFG, SPEC, slides, out, on_slide=lambda j, s: said.append(s), **args)

    run(level=0, probs=True)
    with tifffile.TiffFile(out / "s" / "s_probs.tif") as tif:
        probs = tif.pages[0].asarray()
        assert json.loads(tif.pages[0].description)["samples"] == list(SPEC.index_names)
    assert probs.shape == (384, 512, 5) and probs.dtype == np.uint8
    red = torch.tensor(RED, dtype=torch.uint8)[None, :, None, None]
    model_probs = predict_probs(ColourModel(), segmenter_input(red))
    assert probs[10, 10] == pytest.approx((model_probs[0, :, 0, 0] * 255).round().detach().numpy(), abs=1)  # red: TE
    record = json.loads((out / "s" / ".segmix-s.json").read_text())
    assert {"s_classmap.tif", "s_probs.tif"} <= set(record["outputs"])
    run(level=0, probs=True)
    assert said == ["done", "skipped"]
    (out / "s" / "s_classmap.tif").unlink()  # an output lost: predicted again
    run(level=0, probs=True)
    (out / "s" / ".tmp-k1ll3d00.tif").write_bytes(b"half a map: the writer was killed")
    (out / "s" / ".tmp-notes.txt").write_text("the user's")
    run(level=0)  # probabilities no longer asked: predicted again, the old ones removed with it
    assert said[2:] == ["done", "done"] and not (out / "s" / "s_probs.tif").exists()
    assert (out / "s" / "s_classmap.tif").is_file()
    assert [p.name for p in (out / "s").glob(".tmp-*")] == [".tmp-notes.txt"]  # segmix's leftovers only


def test_a_writer_that_cannot_start_stops_the_one_already_running(tmp_path, monkeypatch):
    import threading

    from segmix.infer import slide_maps

    started = []

    class FailingSecond(slide_maps.PyramidWriter):
        def __init__(self, *args, **kwargs):
            if started:  # the probabilities' writer: its file cannot be made
                raise OSError("disk full")
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(slide_maps, "PyramidWriter", FailingSecond)
    paths = {"classmap_tiff": tmp_path / "s_classmap.tif", "probs": tmp_path / "s_probs.tif"}
    tissue = np.ones((4, 4), bool)
    before = threading.active_count()
    with pytest.raises(OSError, match="disk full"):
        slide_maps.FullResolutionMaps(SPEC, (300, 300), 75.0, tissue, paths, 1.0, 0.5, probs=True, tolerance=1.0)
    assert not started[0]._thread.is_alive() and threading.active_count() == before
    assert list(tmp_path.iterdir()) == []  # the class map's temp file is gone too


@pytest.mark.parametrize("samples", [1, 3])
def test_every_pyramid_level_is_every_second_pixel_of_the_one_above_with_no_temp_file_left(tmp_path, samples):
    from segmix.infer.pyramid import PyramidWriter

    shape = (1000, 1537) if samples == 1 else (700, 530)  # odd sizes: the last row and column count
    full = np.random.default_rng(0).integers(0, 5, (*shape, samples)[: 2 + (samples > 1)], dtype=np.uint8)
    with PyramidWriter(tmp_path / "m.tif", *shape, samples=samples, mpp=0.5) as writer:
        for y in range(0, shape[0], 97):  # bands that are not tiles: the levels are cut as they pass
            writer.write(full[y : y + 97])
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        levels = [page.asarray() for page in tif.pages]
    assert len(levels) == (4 if samples == 1 else 3)
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(level, full[:: 2**k, :: 2**k])
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]
    with pytest.raises(RuntimeError, match="stop"), PyramidWriter(tmp_path / "n.tif", *shape, samples=samples) as w:
        w.write(full[:600])  # the lower levels' temp files exist now
        raise RuntimeError("stop")
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_polygons_are_the_same_when_glass_bands_are_skipped_by_their_counts():
    from segmix.infer.exports import PolygonTracer, value_counts

    background = SPEC.background_index
    mask = np.full((3000, 200), background, np.uint8)
    mask[100:160, 20:90] = 1  # regions far apart, glass between them, one across a band seam
    mask[1000:1050, 50:150] = 2
    mask[2040:2100, 10:40] = 1
    plain, counted = PolygonTracer(SPEC, 2.0, band=1024), PolygonTracer(SPEC, 2.0, band=1024)
    for y in range(0, 3000, 256):
        plain.add(mask[y : y + 256])
        counted.add(mask[y : y + 256], value_counts(mask[y : y + 256]))
    expected = plain.finish()
    assert counted.finish() == expected and len(expected["features"]) == 2
