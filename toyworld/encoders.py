"""Toy encoders as real transformers classes, built locally (no hub):

- a word-level tokenizer over the ToyWorld grammar (`PreTrainedTokenizerFast`, saved with
  `save_pretrained`, T5-style `</s>` appended);
- the teacher's text encoder, trained jointly with it: a small bidirectional `BertModel` with absolute
  positions (default), a causal `CLIPTextModel`, or a bidirectional `T5EncoderModel` (relative positions
  only: trained from scratch its attention saturates onto word identity and it becomes a bag of words;
  results/teacher/experiments/README.md);
- a small `CLIPModel` trained contrastively on ToyWorld (CLIP score, CLIP diversity, and the
  discriminator's text condition on the toy run);
- a small `Dinov2Model` trained on ToyWorld (the VFM-discriminator backbone stand-in and the
  ToyWorld feature space for `fd_t_toyworld`).
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPTextConfig, Dinov2Config, PreTrainedTokenizerFast, T5Config
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from toyworld.grammar import TASKS, prompt_set
from toyworld.world import RESOLUTION

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
MAX_TOKENS = 16
EXTRA_WORDS = ("an", "the", "of", "one", "four", "photo", "object", "objects")


def vocabulary() -> list[str]:
    words = set(EXTRA_WORDS)
    for task in TASKS:
        for spec in prompt_set(task):
            words.update(spec.prompt.lower().split())
    return [PAD, EOS, UNK] + sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=MAX_TOKENS)
    fast.do_lower_case = True
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def tokenize(tokenizer, prompts: list[str]):
    """Lower-cased, padded to MAX_TOKENS, truncated; returns input_ids and attention_mask."""
    return tokenizer([p.lower() for p in prompts], padding="max_length", truncation=True,
                     max_length=MAX_TOKENS, return_tensors="pt")


def text_encoder_config(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4) -> T5Config:
    return T5Config(vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=2 * width, num_layers=layers,
                    num_heads=heads, relative_attention_num_buckets=16, relative_attention_max_distance=32,
                    dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                    use_cache=False, pad_token_id=0, eos_token_id=1)


def teacher_clip_text_config(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4) -> CLIPTextConfig:
    """The toy teacher's causal text encoder (trained jointly with it): CLIP's text tower with absolute
    positions over MAX_TOKENS; its pooled output is the first end-of-text token (`eos_token_id`)."""
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                          num_attention_heads=heads, max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=1,
                          eos_token_id=1, projection_dim=width)


def teacher_bert_text_config(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4) -> BertConfig:
    """The toy teacher's default text encoder (trained jointly with it): BERT's bidirectional encoder with
    absolute position embeddings over MAX_TOKENS, so a token's state says where it stands in the prompt
    whatever its attention learns (the order that binds a colour to its shape and a relation to its
    subject); no dropout, one token type."""
    return BertConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=2 * width, max_position_embeddings=MAX_TOKENS, type_vocab_size=1,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)


def clip_config(vocab_size: int, width: int = 128, layers: int = 3, heads: int = 4, projection_dim: int = 128) -> CLIPConfig:
    text = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=1,
                eos_token_id=1, projection_dim=projection_dim)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=heads,
                  image_size=RESOLUTION, patch_size=4, projection_dim=projection_dim)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def dinov2_config(width: int = 128, layers: int = 4, heads: int = 4) -> Dinov2Config:
    return Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=2,
                        image_size=RESOLUTION, patch_size=4, num_channels=3)


def clip_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(do_resize=False, do_center_crop=False, size={"shortest_edge": RESOLUTION},
                              crop_size={"height": RESOLUTION, "width": RESOLUTION},
                              image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))


def dinov2_image_processor() -> BitImageProcessor:
    return BitImageProcessor(do_resize=False, do_center_crop=False, size={"shortest_edge": RESOLUTION},
                             crop_size={"height": RESOLUTION, "width": RESOLUTION},
                             image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD))
