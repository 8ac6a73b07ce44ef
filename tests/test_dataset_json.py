"""The official SenseFlow dataset JSON loader rejects bad input with one clear message."""
import json

import numpy as np
import pytest
from PIL import Image

from protocols.dataset_json import DatasetError, load_dataset_json
from train.dataset import ImageTextDataset


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    return p


def write(tmp_path, obj, name="d.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_valid_file_loads(tmp_path, image):
    recs = load_dataset_json(write(tmp_path, {"keys": ["0"], "image_paths": [str(image)], "prompts": ["a circle"]}))
    img, prompt = ImageTextDataset(recs, 32)[0]
    assert prompt == "a circle" and img.shape == (3, 32, 32) and img.min() == -1.0


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "is not an object"),
    ({"keys": [], "image_paths": []}, "lacks \\['prompts'\\]"),
    ({"keys": ["0", "1"], "image_paths": ["/x.png"], "prompts": ["a"]}, "unequal lengths"),
    ({"keys": [], "image_paths": [], "prompts": []}, "is empty"),
    ({"keys": ["0"], "image_paths": ["rel.png"], "prompts": ["a"]}, "relative image path"),
    ({"keys": ["0"], "image_paths": ["/definitely/missing.png"], "prompts": ["a"]}, "missing"),
    ({"keys": ["0"], "image_paths": "/x.png", "prompts": ["a"]}, "that is not a list"),
])
def test_malformed_files_are_rejected(tmp_path, content, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset_json(write(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset_json(tmp_path / "nope.json")


def test_wrong_resolution_is_an_error_not_a_resize(tmp_path, image):
    recs = load_dataset_json(write(tmp_path, {"keys": ["0"], "image_paths": [str(image)], "prompts": ["a"]}))
    with pytest.raises(DatasetError, match="expected 64x64"):
        ImageTextDataset(recs, 64)[0]
