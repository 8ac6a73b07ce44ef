"""`python -m evaluate.coco5k`: per COCO image the caption CLIP scores highest, prompts in image-id
order, the provenance of every input, and clear errors for incomplete COCO files (a tiny COCO-like
set and the shipped toy CLIP stand in for COCO 2017 val and CLIP ViT-B/32)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evaluate.coco5k import CocoError, main
from evaluate.generate import prompt_plan
from measures.clip_score import ClipScorer

CLIP = "models/toy/clip"
CAPTIONS = {3: ["a red circle", "a  blue square\n", "a photo of a green triangle"],
            1: ["two red circles", "a white square"],
            2: ["a yellow triangle", "a yellow triangle on the left of a red circle"]}


def tiny_coco(root):
    rng = np.random.default_rng(0)
    (root / "val2017").mkdir(parents=True)
    images, annotations = [], []
    for image_id, texts in CAPTIONS.items():
        name = f"{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name})
        annotations += [{"image_id": image_id, "id": 100 * image_id + k, "caption": t} for k, t in enumerate(texts)]
    (root / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root / "captions_val2017.json", root / "val2017"


def test_best_caption_per_image_in_image_id_order(tmp_path):
    captions, images = tiny_coco(tmp_path)
    result = main(["--captions", str(captions), "--images", str(images), "--clip", CLIP, "--out", str(tmp_path / "c5k")])
    rows = result["rows"]
    assert [r["image_id"] for r in rows] == [1, 2, 3]
    scorer = ClipScorer(CLIP)
    for r in rows:
        texts = [" ".join(t.split()) for t in CAPTIONS[r["image_id"]]]
        pixels = np.asarray(Image.open(images / r["file_name"]).convert("RGB"))
        cos = scorer.per_image(np.repeat(pixels[None], len(texts), 0), texts)
        assert r["caption"] == texts[int(np.argmax(cos))] and r["clip_cosine"] == pytest.approx(cos.max(), abs=1e-6)
        assert r["n_captions"] == len(texts)
    prompts = (tmp_path / "c5k" / "prompts.txt").read_text().splitlines()
    assert prompts == [r["caption"] for r in rows] and "  " not in "".join(prompts)
    provenance = json.loads((tmp_path / "c5k" / "provenance.json").read_text())
    assert provenance["n_images"] == 3 and len(provenance["captions"]["sha256"]) == 64
    assert "config.json" in provenance["clip"]["files"]
    plan = prompt_plan({"fid_prompts": 3, "diversity_prompts": 0, "diversity_samples": 2, "seed": 0,
                        "prompt_file": str(tmp_path / "c5k" / "prompts.txt")})
    assert [r["prompt"] for r in plan] == prompts  # usable as eval.prompt_file


def test_incomplete_coco_files_are_clear_errors(tmp_path):
    captions, images = tiny_coco(tmp_path)
    (images / f"{2:012d}.jpg").unlink()
    with pytest.raises(CocoError, match=r"1 images listed in the captions file are not in --images"):
        main(["--captions", str(captions), "--images", str(images), "--clip", CLIP, "--out", str(tmp_path / "o")])
    done = subprocess.run([sys.executable, "-m", "evaluate.coco5k", "--captions", str(tmp_path / "none.json"),
                           "--images", str(images), "--clip", CLIP], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: the COCO captions file")
    assert not (tmp_path / "o").exists()
