"""T2I-CompBench BLIP-VQA at the official 480 px: the released-format checkpoint converted with
`python -m benchmarks.t2i_compbench.blip_vqa` gives the official code's yes-probabilities (golden
fixture made by T2I-CompBench's BLIPvqa_eval on tiny weights: tests/fixtures/make_compbench_blip_golden.py),
also for a 384-px checkpoint whose position embeddings the official loader interpolates; a 384-px
transformers folder and a wrong tokenizer are refused with what to do."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.t2i_compbench.blip_vqa import BlipVqa, BlipVqaError, clean_question, convert, main

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "compbench_blip"
DATA = json.loads((GOLDEN / "golden.json").read_text())


def converted(tmp_path, checkpoint, name):
    out = tmp_path / name
    main(["--checkpoint", str(checkpoint), "--tokenizer", str(GOLDEN / "tokenizer"), "--out", str(out),
          "--vision-heads", "2", "--text-heads", "2"])
    return out


def check_against(folder, rows):
    vqa = BlipVqa(folder)
    for image, questions, row in zip(DATA["images"], DATA["questions"], rows):
        got = vqa.yes_probabilities(Image.open(GOLDEN / image), questions)
        assert got == pytest.approx(row["probabilities"], abs=1e-4), image  # the official "%.4f" answers' precision


def test_the_converted_480_checkpoint_matches_the_official_scorer(tmp_path):
    folder = converted(tmp_path, GOLDEN / "blip_vqa_tiny.pth", "blip480")
    record = json.loads((folder / "conversion.json").read_text())
    assert record["position_embedding"] == "as released" and record["image_size"] == 480
    check_against(folder, DATA["official"]["480"])


def test_a_384_checkpoint_is_interpolated_as_the_official_loader_does(tmp_path):
    state = torch.load(GOLDEN / "blip_vqa_tiny.pth", weights_only=True)
    state["model"]["visual_encoder.pos_embed"] = torch.load(GOLDEN / "pos_embed_384.pt", weights_only=True)
    torch.save(state, tmp_path / "blip384.pth")
    folder = converted(tmp_path, tmp_path / "blip384.pth", "from384")
    assert "interpolated 24x24 -> 30x30" in json.loads((folder / "conversion.json").read_text())["position_embedding"]
    check_against(folder, DATA["official"]["384_interpolated"])


def test_question_cleaning_is_pre_question():
    assert clean_question('A (Striped) bowl!  ') == "a striped bowl"
    assert clean_question("the table.:;~*#\"") == "the table"


def test_a_384_px_folder_and_a_wrong_tokenizer_are_refused(tmp_path):
    folder = tmp_path / "small"
    convert(GOLDEN / "blip_vqa_tiny.pth", GOLDEN / "tokenizer", folder, image_size=384, vision_heads=2, text_heads=2)
    with pytest.raises(BlipVqaError, match="384 px, not the official 480"):
        BlipVqa(folder)
    short = tmp_path / "tok"
    short.mkdir()
    (short / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no"]) + "\n")
    with pytest.raises(BlipVqaError, match="tokenizer does not match"):
        convert(GOLDEN / "blip_vqa_tiny.pth", short, tmp_path / "bad", vision_heads=2, text_heads=2)
    with pytest.raises(BlipVqaError, match="exists"):
        convert(GOLDEN / "blip_vqa_tiny.pth", GOLDEN / "tokenizer", folder, vision_heads=2, text_heads=2)
