"""Build the paper's COCO-5K prompt set from local COCO 2017 val files (no download):

    python -m evaluate.coco5k --captions annotations/captions_val2017.json --images val2017 \
                              --clip <CLIP ViT-B/32 CLIPModel folder> [--out data/coco5k]

The paper (Sec. 4.1) evaluates on COCO-5K: the 5,000 images of COCO 2017 val, each with the one of
its (about five) captions that CLIP ViT-B/32 scores highest against the image. Per image every
caption is scored (cosine of the L2-normalised projected features, measures/clip_score.py) and the
best kept; captions are stripped and their inner whitespace collapsed (a prompt file holds one
prompt per line). Writes to --out:

  prompts.txt      one prompt per line, images in ascending image_id (`eval.prompt_file` of the paper
                   protocol, protocols/paper_protocol.py)
  coco5k.jsonl     per prompt: image_id, file_name (the real image, for FID against real images),
                   caption, clip_cosine, n_captions
  provenance.json  the inputs' sha256 (captions file, every file of the CLIP folder), counts, the rule
Ties keep the caption listed first in the annotation file. Resumable in the sense that it is
deterministic: re-running with the same inputs writes the same files.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from configs.cli import ArgumentParser, UserError, count, run_command
from configs.paths import readable_folder, writable_folder
from measures.clip_score import ClipScorer
from protocols.provenance import file_sha256


class CocoError(UserError, ValueError):
    """The COCO files are not what the builder needs."""


def clean(caption: str) -> str:
    return re.sub(r"\s+", " ", caption).strip()


def read_captions(path: Path) -> tuple[list[dict], dict[int, list[str]]]:
    """(images sorted by id, captions per image id in file order) of a COCO captions JSON."""
    try:
        data = json.loads(Path(path).read_text())
        images = sorted(data["images"], key=lambda im: int(im["id"]))
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            text = clean(str(ann["caption"]))
            if text:
                captions.setdefault(int(ann["image_id"]), []).append(text)
    except FileNotFoundError:
        raise CocoError(f"the COCO captions file does not exist (--captions {path})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CocoError(f"not a COCO captions JSON (--captions {path}): {e}") from None
    missing = [im["id"] for im in images if int(im["id"]) not in captions]
    if missing:
        raise CocoError(f"{len(missing)} images have no caption in --captions {path} (e.g. image_id {missing[0]})")
    return images, captions


def build(captions_path: str | Path, images_dir: str | Path, clip: str | Path, out: str | Path,
          limit: int | None = None, device: str = "cpu") -> dict:
    images, captions = read_captions(Path(captions_path))
    if limit:
        images = images[:limit]
    images_dir = readable_folder(images_dir, "the COCO val2017 image folder", "--images")
    absent = [im["file_name"] for im in images if not (images_dir / im["file_name"]).is_file()]
    if absent:
        raise CocoError(f"{len(absent)} images listed in the captions file are not in --images {images_dir} "
                        f"(e.g. {absent[0]})")
    clip_dir = readable_folder(clip, "the CLIP ViT-B/32 folder", "--clip")
    out = writable_folder(out, "the COCO-5K output folder", "--out")
    scorer = ClipScorer(clip_dir, device, scale="cosine")
    rows = []
    for im in tqdm(images, desc="COCO-5K captions", unit="image"):
        pixels = np.asarray(Image.open(images_dir / im["file_name"]).convert("RGB"))
        texts = captions[int(im["id"])]
        image_f = scorer.image_features(pixels[None])
        text_f = scorer.text_features(texts)
        cos = (text_f @ image_f[0]).double().numpy()
        best = int(np.argmax(cos))  # first maximum: ties keep the caption listed first
        rows.append({"image_id": int(im["id"]), "file_name": im["file_name"], "caption": texts[best],
                     "clip_cosine": float(cos[best]), "n_captions": len(texts)})
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.txt").write_text("".join(r["caption"] + "\n" for r in rows))
    (out / "coco5k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    provenance = {
        "rule": "COCO 2017 val; per image the caption with the highest CLIP cosine (first on ties); captions "
                "stripped, inner whitespace collapsed; images in ascending image_id",
        "n_images": len(rows), "limit": limit,
        "captions": {"path": str(Path(captions_path).resolve()), "sha256": file_sha256(Path(captions_path))},
        "images": str(images_dir.resolve()),
        "clip": {"path": str(clip_dir.resolve()),
                 "files": {p.name: file_sha256(p) for p in sorted(clip_dir.iterdir()) if p.is_file()}},
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return {"rows": rows, "provenance": provenance}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="COCO 2017 captions_val2017.json")
    ap.add_argument("--images", required=True, help="the COCO 2017 val2017 image folder")
    ap.add_argument("--clip", required=True, help="a CLIP ViT-B/32 CLIPModel folder (openai/clip-vit-base-patch32)")
    ap.add_argument("--out", default="data/coco5k")
    ap.add_argument("--limit", type=count(1), default=None, help="only the first N images (smoke tests; a subset)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    result = build(args.captions, args.images, args.clip, args.out, args.limit, args.device)
    n = len(result["rows"])
    print(f"COCO-5K: {n} prompts -> {args.out}/prompts.txt (+ coco5k.jsonl, provenance.json)"
          + ("" if n == 5000 else f"; note: the paper's set has 5,000, this one {n}"))
    return result


if __name__ == "__main__":
    run_command(main)
