"""GenEval's official edition end to end through the CLI on a tiny Mask2Former carrying the real COCO
label map (detectron2's / transformers' names, as facebook/mask2former-swin-small-coco-instance has
them) and the shipped toy CLIP as the colour classifier: the three classes GenEval names differently
("mouse", "remote", "keyboard") are found under GenEval's names, masks come back at the image's full
resolution, boxes follow mmdet's mask2bbox (+1) convention, and a checkpoint with other labels is
refused."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.geneval.__main__ import main
from benchmarks.geneval.detectors import (COCO_TO_GENEVAL, OBJECT_NAMES, DetectorLabelsError, Mask2FormerDetector,
                                          geneval_labels, instance_postprocess, mask2bbox)

# COCO 2017 instance classes as transformers' COCO checkpoints label them (0-based, detectron2's order)
COCO_ID2LABEL = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush"]
RENAMED = [COCO_ID2LABEL.index(n) for n in ("mouse", "remote", "keyboard")]


def tiny_mask2former(folder, favoured: list[int], labels: list[str] = COCO_ID2LABEL):
    """A random-weight Mask2Former (Swin backbone, 10 queries) whose every query gives equal, near-certain
    probability to the `favoured` classes, with sharp masks (large mask logits)."""
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    id2label = dict(enumerate(labels))
    backbone = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, num_attention_heads=2,
                               encoder_layers=1, decoder_layers=2, num_queries=10, num_labels=len(labels),
                               id2label=id2label, label2id={v: k for k, v in id2label.items()},
                               use_pretrained_backbone=False)
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.class_predictor.weight.zero_()
        model.class_predictor.bias.fill_(-10.0)
        model.class_predictor.bias[favoured] = 10.0
        embedder = model.model.transformer_module.decoder.mask_predictor.mask_embedder
        for name, p in embedder.named_parameters():
            if name.startswith("2."):  # the last layer: mask logits scale with it
                p.mul_(1000.0)
    model.save_pretrained(folder)
    # the checkpoint's own processor size (384, as the hub checkpoint's): the edition uses mmdet's 800/1333
    Mask2FormerImageProcessor(size={"shortest_edge": 384, "longest_edge": 512}).save_pretrained(folder)
    return folder


def official_layout(root, prompts: list[str], size=(96, 80)):
    rng = np.random.default_rng(0)
    for index, prompt in enumerate(prompts):
        cls = prompt.removeprefix("a photo of a ").removeprefix("an ")
        folder = root / f"{index:05}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(
            {"tag": "single_object", "include": [{"class": cls, "count": 1}], "prompt": prompt}) + "\n")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / "samples" / "00000.png")


def test_real_coco_labels_map_onto_genevals_names_in_order():
    names = [line.strip() for line in OBJECT_NAMES.read_text().splitlines() if line.strip()]
    mapping = geneval_labels(dict(enumerate(COCO_ID2LABEL)), names)
    assert [mapping[i] for i in range(80)] == names  # same order as mmdet's (GenEval's) class list
    assert {COCO_ID2LABEL[i] for i in RENAMED} == set(COCO_TO_GENEVAL)
    assert [mapping[i] for i in RENAMED] == ["computer mouse", "tv remote", "computer keyboard"]
    with pytest.raises(DetectorLabelsError, match=r"labels not in GenEval: \['wall'\]"):
        geneval_labels(dict(enumerate(COCO_ID2LABEL + ["wall"])), names)


def test_mask2bbox_and_full_resolution_masks():
    masks = torch.zeros((2, 6, 8), dtype=torch.bool)
    masks[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4
    assert mask2bbox(masks).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]  # mmdet: max + 1
    torch.manual_seed(0)
    cls, logits = torch.randn(4, 6), torch.randn(4, 10, 12)  # 4 queries, 5 classes + no-object
    labels, scores, out, boxes = instance_postprocess(cls, logits, padded_hw=(40, 48), valid_hw=(37, 48),
                                                      image_hw=(111, 144), max_per_image=7)
    assert out.shape == (7, 111, 144) and len(labels) == len(scores) == len(boxes) == 7
    probs = torch.softmax(cls, -1)[:, :-1]
    assert torch.all(scores <= probs.max() + 1e-6) and torch.all(labels < 5)


def test_official_edition_end_to_end_with_the_renamed_classes(tmp_path):
    detector = tiny_mask2former(tmp_path / "m2f", RENAMED)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"edition": "official"}},
                                  "models": {"geneval_detector": str(detector), "geneval_clip": "models/toy/clip"}}))
    prompts = ["a photo of a computer mouse", "a photo of a tv remote", "a photo of a computer keyboard",
               "a photo of a cat"]
    official_layout(tmp_path / "images", prompts)
    summary = main(["--params", str(params), "--family", "sd3", "--score-only", str(tmp_path / "images"),
                    "--out", str(tmp_path / "out")])
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    correct = {r["prompt"]: r["correct"] for r in rows}
    assert correct == {"a photo of a computer mouse": True, "a photo of a tv remote": True,
                       "a photo of a computer keyboard": True, "a photo of a cat": False}
    assert summary["geneval_single_object"] == 0.75
    assert summary["detector"] == Mask2FormerDetector.name and summary["edition"] == "official"
    found = Mask2FormerDetector({"geneval_detector": str(detector), "geneval_clip": "models/toy/clip"}).candidates(
        np.asarray(Image.open(tmp_path / "images" / "00000" / "samples" / "00000.png")))
    assert {name for name, objs in found.items() if objs[0].score > 0.3} == {"computer mouse", "tv remote",
                                                                              "computer keyboard"}
    assert not {"mouse", "remote", "keyboard"} & set(found)  # never under the COCO names
    obj = found["computer mouse"][0]
    assert obj.mask.shape == (96, 80)  # the image's own resolution
    ys, xs = np.nonzero(obj.mask)
    assert obj.box[:4] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert 0.3 < obj.score <= 1 / 3 + 1e-6  # class probability 1/3 x mask score ~1


def test_other_label_sets_are_refused(tmp_path):
    detector = tiny_mask2former(tmp_path / "m2f", [0], labels=COCO_ID2LABEL[:79] + ["wall"])
    with pytest.raises(DetectorLabelsError, match="GenEval classes the checkpoint lacks: \\['toothbrush'\\]"):
        Mask2FormerDetector({"geneval_detector": str(detector), "geneval_clip": "models/toy/clip"})
