"""Model packages (``segmix export``): a folder that predicts like the run, never unpickled, refused when newer."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from segmix.config import Stage2Config
from segmix.data.spec import PRESETS
from segmix.errors import MissingModelFile, ModelFileError, OutputError
from segmix.models.package import CONFIG_FILE, read_package, write_package
from segmix.pipeline import run_pipeline
from segmix.pipeline.export import export_run
from segmix.pipeline.layout import run_segmenter
from tests.test_pipeline import tiny_config
from tests.test_predict import make_slide

SPEC = PRESETS["luad-histoseg"].model_copy(update={"mpp": 0.5})


def _payload() -> dict:
    from segmix.models import create_segmenter

    model = create_segmenter("auto", "resnet18", SPEC.num_indices)
    config = Stage2Config(train={"image_size": 64}).model_dump(mode="json")
    return {"state_dict": model.state_dict(), "config": config, "spec": SPEC.model_dump(mode="json"), "stain": None}


def test_package_round_trip_rebuilds_the_same_model(tmp_path):
    payload = _payload()
    write_package(payload, "segmenter", tmp_path / "pkg")
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == [CONFIG_FILE, "model.safetensors"]
    doc = json.loads((tmp_path / "pkg" / CONFIG_FILE).read_text())
    assert doc["architecture"] == "DeepLabV3Plus" and doc["mpp"] == 0.5 and doc["input_size"] == 64
    assert doc["mask_indices"] == ["TE", "NEC", "LYM", "TAS", "background"]
    import segmix

    trained = segmix.load_segmenter(tmp_path / "pkg")  # the front door takes a package too
    model, cfg, spec = trained.network, trained.config, trained.spec
    assert spec == SPEC and cfg.train.image_size == 64
    for key, value in model.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"segmix": "99.0.0"}, "newer than this segmix"),
        ({"format_version": 2}, "newer than this segmix"),
        ({"weights_url": "x"}, "unknown keys weights_url"),
        ({"kind": "classifier"}, "not a segmix segmenter package"),
    ],
)
def test_packages_of_a_newer_segmix_or_other_keys_are_refused(tmp_path, change, message):
    write_package(_payload(), "segmenter", tmp_path)
    doc = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**doc, **change}))
    with pytest.raises(ModelFileError, match=message):
        read_package(tmp_path, "segmenter")


def test_export_refuses_a_folder_of_other_files_and_a_run_without_a_model(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(MissingModelFile, match="no stage-2 model"):
        export_run(tmp_path / "mine", tmp_path / "out")
    run = tmp_path / "run"
    (run / "stage2").mkdir(parents=True)
    torch.save({}, run / "stage2" / "segmenter.pt")
    with pytest.raises(OutputError, match="holds other files"):
        export_run(run, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def _predict(model_args: list[str], inputs: list, out) -> None:
    args = [sys.executable, "-m", "segmix.cli", "predict", *model_args, *map(str, inputs), "--out", str(out)]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_exported_package_predicts_byte_equal_to_its_run_after_the_run_is_gone(tmp_path):
    from segmix.eval import evaluate
    from segmix.pseudo import generate_pseudo_masks

    run = tmp_path / "run"
    run_pipeline(tiny_config("fully_supervised=false", "mpp=0.5"), run, progress=False, until="evaluate")
    pkg = export_run(run, tmp_path / "pkg")
    assert (pkg / "classifier" / CONFIG_FILE).is_file() and "0.5 µm/px" in (pkg / "README.md").read_text()
    data = shutil.copytree(run / "data", tmp_path / "data")
    tile = next((data / "test" / "img").iterdir())
    make_slide(tmp_path / "slide.tif", width=256, height=192, mpp=0.25, downsample=4)
    # the same scores, pseudo masks and predictions from the run's files and from the package
    assert evaluate(pkg, data).as_dict() == evaluate(run_segmenter(run), data).as_dict()  # the last round's
    generate_pseudo_masks(run / "stage1" / "classifier.pt", data, tmp_path / "cams-run")
    generate_pseudo_masks(pkg, data, tmp_path / "cams-pkg")
    for mask in (tmp_path / "cams-run" / "masks").iterdir():
        assert mask.read_bytes() == (tmp_path / "cams-pkg" / "masks" / mask.name).read_bytes()
    _predict(["--run", str(run)], [tile, tmp_path / "slide.tif"], tmp_path / "from-run")
    shutil.rmtree(run)
    _predict(["--model", str(pkg)], [tile, tmp_path / "slide.tif"], tmp_path / "from-pkg")
    compared = 0
    for path in (tmp_path / "from-run").rglob("*"):
        if path.name.startswith(".segmix-"):  # output records: the same model's fingerprint, other paths
            twin = json.loads((tmp_path / "from-pkg" / path.relative_to(tmp_path / "from-run")).read_text())
            assert json.loads(path.read_text())["request"] == twin["request"]
        elif path.is_file() and not path.name.endswith(("_summary.json", "cohort.csv")):  # those hold timings
            assert path.read_bytes() == (tmp_path / "from-pkg" / path.relative_to(tmp_path / "from-run")).read_bytes()
            compared += 1
    assert compared == 8  # the tile's mask, overlay, areas; the slide's class maps (TIFF, PNG), overlay, areas, GeoJSON
    summary = json.loads((tmp_path / "from-pkg" / "slide" / "slide_summary.json").read_text())
    assert summary["mpp_model"] == 0.5 and summary["mpp_read"] == pytest.approx(0.5) and summary["level"] == 0


def test_predict_on_a_slide_without_any_resolution_is_one_error_naming_the_option(tmp_path):
    from segmix.models import save_segmenter

    payload = _payload()
    spec = SPEC.model_copy(update={"mpp": None})
    save_segmenter(payload["state_dict"], Stage2Config(train={"image_size": 64}), spec, tmp_path / "m.pt")
    make_slide(tmp_path / "s.tif", width=256, height=192)
    args = [sys.executable, "-m", "segmix.cli", "predict", "--checkpoint", str(tmp_path / "m.pt")]
    r = subprocess.run([*args, str(tmp_path / "s.tif"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "pass --mpp" in r.stderr, r.stderr
    assert not (tmp_path / "o" / "cohort.csv").exists()  # refused before any slide, not recorded as unreadable


def test_three_lines_give_the_class_map_that_segmix_predict_writes(tmp_path):
    import numpy as np

    import segmix
    from segmix.data.io import read_image, read_mask, write_image

    write_package(_payload(), "segmenter", tmp_path / "pkg")
    pixels = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    pixels[:20] = 250  # glass: background by the dataset's rule
    write_image(tmp_path / "t.png", pixels)
    model = segmix.load_segmenter(tmp_path / "pkg")
    tissue = model.predict(tmp_path / "t.png")
    _predict(["--model", str(tmp_path / "pkg")], [tmp_path / "t.png"], tmp_path / "out")
    assert np.array_equal(tissue, read_mask(tmp_path / "out" / "t_mask.png", SPEC.num_indices))
    assert (tissue[:20] == model.background_index).all()
    probs = model.probs(read_image(tmp_path / "t.png"))
    assert probs.shape == (SPEC.num_indices, 80, 96) and np.allclose(probs.sum(0), 1, atol=1e-2)
    tissue_pixels = tissue != model.background_index
    assert np.array_equal(probs.argmax(0)[tissue_pixels], tissue[tissue_pixels])
    assert model.classes == SPEC.classes and model.palette == SPEC.palette[: SPEC.num_indices] and model.mpp == 0.5
