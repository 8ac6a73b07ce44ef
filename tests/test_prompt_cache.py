"""The per-prompt text-feature cache returns what the encoder returns for the batch, encodes each
prompt once, and keeps at most `capacity` prompts."""
import torch

from backbones.toy import ToyBackbone
from train.prompt_cache import PromptFeatureCache


def test_cached_conditioning_equals_the_encoders_and_encodes_once():
    bb = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    calls = []

    def encode(prompts):
        calls.append(list(prompts))
        with torch.no_grad():
            return bb.encode_prompts(prompts)

    cache = PromptFeatureCache(encode, capacity=3)
    first = ["a photo of a red circle", "a square", "a photo of a red circle"]
    got = cache(first)
    with torch.no_grad():
        want = bb.encode_prompts(first)
    assert torch.equal(got.embeds, want.embeds) and torch.equal(got.pooled, want.pooled)
    assert calls == [["a photo of a red circle", "a square"]]  # each distinct prompt once
    cache(["a square", "a triangle"])
    assert calls[-1] == ["a triangle"] and (cache.hits, cache.misses) == (2, 3)
    cache(["two circles"])  # a fourth prompt evicts the least recently used one ("a photo of a red circle")
    assert len(cache) == 3
    cache(["a photo of a red circle"])
    assert calls[-1] == ["a photo of a red circle"]


def test_capacity_zero_passes_through():
    seen = []
    cache = PromptFeatureCache(lambda p: seen.append(p) or torch.zeros(len(p), 4), capacity=0)
    cache(["a", "a"])
    cache(["a"])
    assert seen == [["a", "a"], ["a"]] and len(cache) == 0
