"""Dataset layer: the three layouts, and every bad-input case with its documented outcome."""

import numpy as np
import pytest
from PIL import Image

from segmix.data.dataset import TileDataset, scan_split
from segmix.data.io import read_image, read_mask, write_image, write_mask
from segmix.data.spec import PRESETS
from segmix.errors import DatasetError
from tests.conftest import make_tree


@pytest.mark.parametrize("preset", list(PRESETS))
def test_layouts_read(tmp_path, preset):
    root = make_tree(tmp_path / preset, preset, n_train=5, n_eval=3, sizes=((16, 16), (12, 20)))
    spec = PRESETS[preset]
    train = TileDataset(root, "train")
    assert len(train) == 5
    item = train[1]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (12, 20, 3)
    assert item["label"].shape == (spec.num_classes,) and item["label"].sum() == 2
    assert item["mask"] is None
    for split in ("val", "test"):
        ds = TileDataset(root, split)
        assert len(ds) == 3
        it = ds[1]
        assert it["mask"].shape == it["image"].shape[:2] == (12, 20)
        present = np.unique(it["mask"])
        assert it["label"].tolist() == [int(c in present) for c in range(spec.num_classes)]


def test_train_gt_pairs_by_name(tmp_path):
    root = make_tree(tmp_path / "d", "luad-histoseg", n_train=2)
    spec = PRESETS["luad-histoseg"].model_copy(
        update={"splits": PRESETS["luad-histoseg"].splits.model_copy(update={"train_gt": "train_gt"})}
    )
    for f in (root / "train").iterdir():
        write_mask(root / "train_gt" / f.name, np.full((16, 16), 2, np.uint8), spec.palette)
    ds = TileDataset(root, "train", spec=spec)
    assert (ds[0]["mask"] == 2).all()
    (root / "train_gt" / ds.samples[0].name).unlink()
    with pytest.raises(DatasetError, match="no mask for this image"):
        TileDataset(root, "train", spec=spec)


def _luad(tmp_path):
    return make_tree(tmp_path / "d", "luad-histoseg", n_train=3, n_eval=2)


def test_corrupt_truncated_zero_byte_and_fake_png_stop_with_the_file_name(tmp_path):
    root = _luad(tmp_path)
    files = sorted((root / "train").iterdir())
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])  # truncated
    files[1].write_bytes(b"")  # zero bytes
    files[2].write_text("not an image at all")  # non-image with .png name
    ds = TileDataset(root, "train")
    for i, problem in enumerate(["corrupt or truncated", "empty file", "not an image"]):
        with pytest.raises(DatasetError, match=problem) as err:
            ds[i]
        assert files[i].name in str(err.value)


def test_stray_files_are_skipped_and_counted(tmp_path):
    root = _luad(tmp_path)
    (root / "train" / "notes.txt").write_text("hi")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "sub").mkdir()
    split = scan_split(root, PRESETS["luad-histoseg"], "train")
    assert len(split.samples) == 3 and sorted(p.name for p in split.skipped) == [".DS_Store", "notes.txt"]


def test_empty_and_missing_folders(tmp_path):
    root = _luad(tmp_path)
    for f in (root / "val" / "img").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="no images in folder"):
        TileDataset(root, "val")
    with pytest.raises(DatasetError, match="does not exist"):
        scan_split(tmp_path / "nowhere", PRESETS["luad-histoseg"], "train")


def test_label_missing_from_a_train_name_stops(tmp_path):
    root = _luad(tmp_path)
    write_image(root / "train" / "unlabelled.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="unlabelled.png: no image-level label"):
        TileDataset(root, "train")


def test_mask_of_wrong_size_and_out_of_range_values(tmp_path):
    root = _luad(tmp_path)
    pal = PRESETS["luad-histoseg"].palette
    write_mask(root / "val" / "mask" / "e0.png", np.zeros((8, 16), np.uint8), pal)
    write_mask(root / "val" / "mask" / "e1.png", np.full((16, 16), 7, np.uint8), pal)
    ds = TileDataset(root, "val")
    with pytest.raises(DatasetError, match=r"e0.png: mask is 16x8 \(WxH\) but its image is 16x16"):
        ds[0]
    with pytest.raises(DatasetError, match=r"e1.png: mask values \[7\] out of range 0..4"):
        ds[1]


def test_missing_mask_for_eval_image(tmp_path):
    root = _luad(tmp_path)
    (root / "test" / "mask" / "e1.png").unlink()
    with pytest.raises(DatasetError, match="e1.png: no mask"):
        TileDataset(root, "test")


def test_rgba_grayscale_16bit_palette_images_become_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top opaque red-ish, bottom transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 4, 3) and out[0, 0].tolist() == [200, 0, 0] and out[3, 3].tolist() == [255, 255, 255]
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png")[0, 0].tolist() == [77, 77, 77]
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "i16.png")
    assert read_image(tmp_path / "i16.png")[0, 0].tolist() == [255, 255, 255]


def test_rgb_colour_mask_decodes_through_palette(tmp_path):
    pal = PRESETS["luad-histoseg"].palette
    rgb = np.array([[pal[0], pal[3]], [pal[4], pal[1]]], np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", 5, pal).tolist() == [[0, 3], [4, 1]]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, "RGB").save(tmp_path / "m.png")
    with pytest.raises(DatasetError, match=r"colour \(1, 2, 3\) is not in the palette"):
        read_mask(tmp_path / "m.png", 5, pal)


def test_ignore_value_255_is_allowed_in_masks(tmp_path):
    write_mask(tmp_path / "m.png", np.array([[0, 255]], np.uint8), PRESETS["luad-histoseg"].palette)
    assert read_mask(tmp_path / "m.png", 5).tolist() == [[0, 255]]


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.png"
    write_image(path, np.zeros((4, 4, 3), np.uint8))
    before = path.read_bytes()
    with pytest.raises(Exception):
        write_image(path, np.zeros((4, 4), np.float32))  # cannot be saved as RGB
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_duplicate_names_stop_naming_both_files(tmp_path):
    root = _luad(tmp_path)
    first = sorted((root / "train").iterdir())[0]
    write_image(first.with_suffix(".jpg"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="duplicate name") as err:
        TileDataset(root, "train")
    assert first.name in str(err.value) and first.with_suffix(".jpg").name in str(err.value)
