"""T2I-CompBench's BLIP-VQA at the official 480 px, on transformers' BLIP classes.

    python -m benchmarks.t2i_compbench.blip_vqa --checkpoint model_base_vqa_capfilt_large.pth \\
        --tokenizer <bert-base-uncased folder> --out models/compbench_blip_vqa_480
    # then params.yaml models.compbench_blip_vqa: models/compbench_blip_vqa_480

The official scorer (T2I-CompBench BLIPvqa_eval: configs/vqa.yaml, models/blip_vqa.py) runs
Salesforce's `blip_vqa` at image_size 480 from `model_base_vqa_capfilt_large.pth`. The transformers
conversion on the hub (Salesforce/blip-vqa-capfilt-large) was made at 384 px: its position
embeddings (577) were interpolated from the checkpoint's, so it cannot run at 480 (901 positions) and
would not be the official model if it were made to. This converts the original checkpoint instead:

- `{"model": state_dict}` (the released .pth; read with weights_only=True) -> BlipForQuestionAnswering:
  `visual_encoder.*` renamed to BlipVisionModel (evaluate/imagereward.py VISION_RENAMES, LayerNorm eps
  1e-6 as BLIP's ViT), `text_encoder.*` and `text_decoder.*` 1:1 (med's BertModel / BertLMHeadModel
  names are BlipTextModel's / BlipTextLMHeadModel's);
- position embeddings: kept as they are when their grid is image_size / patch (the released VQA
  checkpoint, fine-tuned at 480); otherwise interpolated exactly as BLIP's `load_checkpoint` does
  (models/vit.py interpolate_pos_embed: bicubic, align_corners=False, class token kept), which is what
  the official code would run; `conversion.json` records which;
- sizes read from the weights' shapes; heads (not in the shapes): ViT-B and BERT-base use width / 64;
- processor: the bert-base-uncased tokenizer plus "[DEC]" (bos, 30522) and "[ENC]" (30523) as BLIP's
  init_tokenizer adds them; image processor 480 x 480 bicubic, CLIP mean / std (the official transform).

`BlipVqa` answers the official question: for each noun phrase "<phrase>?" (lower-cased, `.!"()*#:;~`
removed, trailing spaces stripped: data/utils.py pre_question), the question's first token replaced by
[ENC], the text encoder cross-attends to the ViT tokens, the decoder sees only [DEC] and cross-attends
to the question's (unpadded) states, and the score is
P(yes) / (P(yes) + P(no)) of the first position's softmax over the whole vocabulary (blip_vqa.py
vqa_prob, ids 2748 / 2053 in bert-base-uncased). The golden fixture (tests/fixtures/
make_compbench_blip_golden.py) runs the official code on tiny weights; tests/test_compbench_blip.py
must match it.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from configs.cli import ArgumentParser, UserError, run_command
from configs.paths import readable_folder, writable_folder
from evaluate.imagereward import MEAN, STD, vision_state
from measures.weights import load_tensors
from protocols.provenance import file_sha256

OFFICIAL_IMAGE_SIZE = 480
BOS, ENC = "[DEC]", "[ENC]"
SOURCE = ("https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/model_base_vqa_capfilt_large.pth "
          "(T2I-CompBench BLIPvqa_eval/configs/vqa.yaml)")
QUESTION_STRIP = re.compile(r"([.!\"()*#:;~])")


class BlipVqaError(UserError, ValueError):
    """A BLIP-VQA checkpoint or folder that cannot give the official 480-px scores."""


def interpolate_position_embedding(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """BLIP models/vit.py interpolate_pos_embed for a ViT with one extra (class) token."""
    old = int(round((pos.shape[1] - 1) ** 0.5))
    if old == grid:
        return pos
    tokens = pos[:, 1:].reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = torch.nn.functional.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def converted_state(state: dict, image_size: int) -> tuple[dict, dict]:
    """(BlipForQuestionAnswering state dict, what was done) from an original BLIP VQA state dict."""
    if "visual_encoder.pos_embed" not in state or "text_decoder.cls.predictions.bias" not in state:
        raise BlipVqaError("not an original BLIP VQA state dict (it needs visual_encoder.* and text_decoder.*); "
                           f"expected the released checkpoint: {SOURCE}")
    vis = vision_state(state, "visual_encoder.", "the BLIP VQA checkpoint")
    patch = vis["embeddings.patch_embedding.weight"].shape[-1]
    if image_size % patch:
        raise BlipVqaError(f"image size {image_size} is not a multiple of the ViT's patch {patch}")
    pos = vis["embeddings.position_embedding"]
    old_grid, grid = int(round((pos.shape[1] - 1) ** 0.5)), image_size // patch
    vis["embeddings.position_embedding"] = interpolate_position_embedding(pos.float(), grid).to(pos.dtype)
    out = {f"vision_model.{k}": v for k, v in vis.items()}
    for key, value in state.items():
        if key.startswith(("text_encoder.", "text_decoder.")) and not key.endswith("position_ids"):
            out[key] = value  # (position_ids: a buffer med's BertEmbeddings saves; arange, rebuilt by transformers)
    done = {"checkpoint_image_size": old_grid * patch, "image_size": image_size,
            "position_embedding": "as released" if old_grid == grid else
            f"interpolated {old_grid}x{old_grid} -> {grid}x{grid} (bicubic, as BLIP's load_checkpoint)"}
    return out, done


def blip_config(state: dict, image_size: int, vision_heads: int | None, text_heads: int | None):
    """BlipConfig from the converted weights' shapes (heads: width / 64 unless given)."""
    from transformers import BlipConfig

    width = state["vision_model.embeddings.class_embedding"].shape[-1]
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.layers."))
    hidden = state["text_encoder.embeddings.word_embeddings.weight"].shape[1]
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("text_encoder.encoder.layer."))
    return BlipConfig(
        vision_config=dict(hidden_size=width, intermediate_size=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                           num_hidden_layers=depth, num_attention_heads=vision_heads or max(1, width // 64),
                           image_size=image_size, patch_size=state["vision_model.embeddings.patch_embedding.weight"].shape[-1],
                           layer_norm_eps=1e-6, hidden_act="gelu"),
        text_config=dict(vocab_size=state["text_encoder.embeddings.word_embeddings.weight"].shape[0], hidden_size=hidden,
                         encoder_hidden_size=width,
                         intermediate_size=state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0],
                         num_hidden_layers=layers, num_attention_heads=text_heads or max(1, hidden // 64),
                         max_position_embeddings=state["text_encoder.embeddings.position_embeddings.weight"].shape[0],
                         layer_norm_eps=1e-12, hidden_act="gelu", bos_token_id=30522, sep_token_id=102, pad_token_id=0))


def convert(checkpoint: str | Path, tokenizer: str | Path, out: str | Path, image_size: int = OFFICIAL_IMAGE_SIZE,
            vision_heads: int | None = None, text_heads: int | None = None) -> Path:
    """Write a BlipForQuestionAnswering + BlipProcessor folder at `image_size` (module docstring)."""
    from transformers import BertTokenizer, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists():
        raise BlipVqaError(f"{out} exists; nothing was overwritten: pass another --out or move it aside")
    raw = load_tensors(checkpoint, "the BLIP VQA checkpoint")
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise BlipVqaError(f"{str(checkpoint)!r} holds no state dict (expected {{'model': state_dict}}: {SOURCE})")
    converted, done = converted_state(state, image_size)
    config = blip_config(converted, image_size, vision_heads, text_heads)
    model = BlipForQuestionAnswering(config).eval()
    own = model.state_dict()
    missing = [k for k in own if k not in converted and k not in model._tied_weights_keys]
    unexpected = [k for k in converted if k not in own]
    wrong = [k for k in converted if k in own and own[k].shape != converted[k].shape]
    if missing or unexpected or wrong:
        raise BlipVqaError(f"the BLIP VQA checkpoint does not map onto BlipForQuestionAnswering: missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}, other shapes {wrong[:4]} (heads: --vision-heads/--text-heads)")
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    tok = BertTokenizer.from_pretrained(str(readable_folder(tokenizer, "the bert-base-uncased tokenizer folder",
                                                            "--tokenizer")))
    tok.add_special_tokens({"bos_token": BOS})
    tok.add_special_tokens({"additional_special_tokens": [ENC]})
    if tok.convert_tokens_to_ids(BOS) != config.text_config.bos_token_id or len(tok) != config.text_config.vocab_size:
        raise BlipVqaError(f"the tokenizer does not match the checkpoint: [DEC] -> {tok.convert_tokens_to_ids(BOS)} "
                           f"(expected {config.text_config.bos_token_id}), {len(tok)} tokens (the checkpoint has "
                           f"{config.text_config.vocab_size}); use bert-base-uncased's vocab.txt")
    images = BlipImageProcessor(size={"height": image_size, "width": image_size}, resample=Image.BICUBIC,
                                image_mean=list(MEAN), image_std=list(STD))
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    BlipProcessor(image_processor=images, tokenizer=tok).save_pretrained(tmp)
    digest = file_sha256(checkpoint)  # streamed and disk-cached, as every model file's provenance hash
    (tmp / "conversion.json").write_text(json.dumps({"source": str(checkpoint), "sha256": digest, **done,
                                                     "converter": "benchmarks/t2i_compbench/blip_vqa.py"}, indent=2))
    tmp.rename(out)
    return out


def clean_question(question: str) -> str:
    """T2I-CompBench BLIPvqa_eval data/utils.py pre_question (questions here are far below 50 words)."""
    return QUESTION_STRIP.sub("", question.lower()).rstrip(" ")


class BlipVqa:
    """The official yes-probability of questions about one image (module docstring)."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from transformers import AutoProcessor, BlipForQuestionAnswering

        self.model = BlipForQuestionAnswering.from_pretrained(str(folder)).to(device).eval()
        size = self.model.config.vision_config.image_size
        if size != OFFICIAL_IMAGE_SIZE:
            raise BlipVqaError(
                f"the BLIP-VQA folder {str(folder)!r} is made for {size} px, not the official {OFFICIAL_IMAGE_SIZE} "
                f"(the hub's Salesforce/blip-vqa-capfilt-large is a 384-px conversion): convert the released "
                f"checkpoint with python -m benchmarks.t2i_compbench.blip_vqa --checkpoint <{SOURCE.split()[0]}> "
                f"--tokenizer <bert-base-uncased> --out <folder> and point models.compbench_blip_vqa at it")
        processor = AutoProcessor.from_pretrained(str(folder))
        self.tokenizer, self.image_processor = processor.tokenizer, processor.image_processor
        vocab = self.tokenizer.get_vocab()
        if ENC not in vocab:
            raise BlipVqaError(f"the BLIP-VQA folder {str(folder)!r} has no [ENC] token; convert the released "
                               f"checkpoint with python -m benchmarks.t2i_compbench.blip_vqa")
        self.enc_id, self.bos_id = vocab[ENC], self.model.config.text_config.bos_token_id
        self.yes_id, self.no_id = vocab["yes"], vocab["no"]
        self.device = device

    @torch.no_grad()
    def yes_probabilities(self, image: np.ndarray | Image.Image, questions: list[str]) -> list[float]:
        if not questions:
            return []
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        pil = pil.convert("RGB").resize((OFFICIAL_IMAGE_SIZE, OFFICIAL_IMAGE_SIZE), Image.BICUBIC)
        pixels = self.image_processor(pil, do_resize=False, return_tensors="pt").pixel_values.to(self.device)
        tok = self.tokenizer([clean_question(q) for q in questions], padding="longest", truncation=True,
                             max_length=35, return_tensors="pt").to(self.device)
        ids = tok.input_ids.clone()
        ids[:, 0] = self.enc_id  # blip_vqa.py: question.input_ids[:, 0] = tokenizer.enc_token_id
        image_embeds = self.model.vision_model(pixel_values=pixels).last_hidden_state
        image_embeds = image_embeds.expand(len(questions), -1, -1)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question = self.model.text_encoder(input_ids=ids, attention_mask=tok.attention_mask,
                                           encoder_hidden_states=image_embeds,
                                           encoder_attention_mask=image_mask).last_hidden_state
        # The decoder reads each question's states without padding: transformers' BlipTextAttention (5.x) does
        # not hand the cross-attention mask on to BlipTextSelfAttention, so padded question tokens would be
        # attended to (the official med.py masks them; tests/test_compbench_blip.py has a padded batch).
        start = torch.full((1, 1), self.bos_id, dtype=torch.long, device=self.device)
        logits = torch.cat([self.model.text_decoder(input_ids=start, encoder_hidden_states=question[i:i + 1, :n],
                                                    encoder_attention_mask=tok.attention_mask[i:i + 1, :n]).logits[:, 0]
                            for i, n in enumerate(tok.attention_mask.sum(1).tolist())])
        prob = logits.float().softmax(-1)
        yes, no = prob[:, self.yes_id], prob[:, self.no_id]
        return (yes / (yes + no)).tolist()


def main(argv=None) -> Path:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="model_base_vqa_capfilt_large.pth (the released BLIP VQA)")
    ap.add_argument("--tokenizer", required=True, help="a bert-base-uncased tokenizer folder (vocab.txt)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=OFFICIAL_IMAGE_SIZE)
    ap.add_argument("--vision-heads", type=int, default=None, help="ViT heads (default width / 64: 12 for ViT-B)")
    ap.add_argument("--text-heads", type=int, default=None, help="BERT heads (default hidden / 64: 12 for BERT-base)")
    args = ap.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise BlipVqaError(f"the BLIP VQA checkpoint does not exist (--checkpoint: {args.checkpoint}); download {SOURCE}")
    out = writable_folder(args.out, "the converted BLIP-VQA folder", "--out")
    done = convert(args.checkpoint, args.tokenizer, out, args.image_size, args.vision_heads, args.text_heads)
    print(f"blip_vqa: wrote {done} ({json.loads((done / 'conversion.json').read_text())['position_embedding']})")
    return done


if __name__ == "__main__":
    run_command(main)
