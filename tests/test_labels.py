import numpy as np
import pytest

from segmix.data.labels import format_label, parse_label
from segmix.errors import DatasetError


@pytest.mark.parametrize(
    "name",
    ["a-[1 0 0 1].png", "a-[1001].png", "a-[1, 0, 0, 1].png", "x/y/id_3-[1,0,0,1].png", "b[2]-[1  0 0 1].png"],
)
def test_every_published_spelling_parses(name):
    assert parse_label(name, 4).tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize(
    "name, problem",
    [
        ("a.png", "no image-level label"),
        ("a-[1 0 2 1].png", "malformed"),
        ("a-[1 0 1].png", "3 entries"),
        ("a-[0 0 0 0].png", "marks no class"),
        ("a-[].png", "malformed"),
        ("a-[1 0 0 1]x.png", "no image-level label"),
        ("a-[1;0;0;1].png", "malformed"),
    ],
)
def test_bad_labels_name_the_file(name, problem):
    with pytest.raises(DatasetError, match=problem) as err:
        parse_label(name, 4)
    assert name in str(err.value)


@pytest.mark.parametrize("style, text", [("space", "[1 0 1]"), ("compact", "[101]"), ("comma", "[1, 0, 1]")])
def test_format_round_trips(style, text):
    label = np.array([1, 0, 1], np.uint8)
    assert format_label(label, style) == text
    assert parse_label(f"t-{text}.png", 3).tolist() == [1, 0, 1]
