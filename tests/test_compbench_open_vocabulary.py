"""T2I-CompBench's spatial judge with an open-vocabulary detector: a tiny random-weight OWLv2 (the real
architecture and processor: square padding, text queries) asked for the prompt's nouns returns one
detection list in the 479-px detector frame, named by the query, that the official rule scores; the
detector's kind and threshold are in the judge's name."""
import json

import numpy as np
import torch
from PIL import Image

from benchmarks.t2i_compbench.judges import model_type, open_vocabulary_detections
from benchmarks.t2i_compbench.scoring import first_detection, spatial_image_score


def tiny_owlv2(folder):
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor,
                              Owlv2Processor)

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {token: i for i, token in enumerate(letters + [c + "</w>" for c in letters])}
    # special tokens last, as in CLIP's vocabulary: OWL treats a query whose first id is 0 as padding
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    config = Owlv2Config(text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                                      "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32,
                                      "bos_token_id": len(vocab) - 2, "eos_token_id": len(vocab) - 1,
                                      "pad_token_id": len(vocab) - 1},
                         vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                        "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
                         projection_dim=32)
    torch.manual_seed(0)
    Owlv2ForObjectDetection(config).eval().save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_open_vocabulary_detector_answers_the_prompts_nouns(tmp_path):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    folder = tiny_owlv2(tmp_path / "owl")
    assert model_type(folder) == "owlv2"
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (479, 719, 3), dtype=np.uint8))
    dets = open_vocabulary_detections(model, processor, pil, ["giraffe", "lamp"], threshold=0.0)
    assert len(dets) == 16 and {name for name, _, _ in dets} <= {"giraffe", "lamp"}  # one per query patch (4x4)
    scores = [s for _, _, s in dets]
    assert scores == sorted(scores, reverse=True)
    # boxes in the image's pixel frame: OWLv2 predicts them on the square the image is padded to
    # (bottom / right), so normalised coordinates scale by the square's side (719), not by 719 x 479
    with torch.no_grad():
        inputs = processor(text=[["a photo of a giraffe", "a photo of a lamp"]], images=pil, padding=True,
                           return_tensors="pt")
        out = model(**inputs)
    logits = out.logits[0]
    best = int(logits.max(-1).values.sigmoid().argmax())  # the first patch of the highest score
    cx, cy, w, h = out.pred_boxes[0, best].tolist()
    top = dets[0][1]
    expected = [(cx - w / 2) * 719, (cy - h / 2) * 719, (cx + w / 2) * 719, (cy + h / 2) * 719]
    assert np.allclose([top.x_min, top.y_min, top.x_max, top.y_max], expected, atol=1e-3)
    assert dets[0][0] == ["giraffe", "lamp"][int(logits[best].argmax())]
    det1, det2 = first_detection(dets, "giraffe"), first_detection(dets, "lamp")
    assert det1 is not None or det2 is not None
    score = spatial_image_score("next to", det1, det2)
    assert score == 0.0 or score >= 0.5  # the official cut-off applies unchanged
    assert open_vocabulary_detections(model, processor, pil, ["giraffe"], threshold=1.1) == []
