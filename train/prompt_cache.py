"""Per-prompt features of the frozen text encoders, computed once per prompt.

The teacher's text encoders and the discriminator's CLIP are frozen, so a prompt gets the same
features every time it is drawn; ToyWorld's training set has a few thousand distinct prompts that
recur every epoch. `PromptFeatureCache` wraps an encode function (prompts -> `Conditioning` or a
(B, ...) tensor), encodes only the prompts it has not kept (once each, in first-seen order) and
assembles the batch from per-prompt rows, least recently used rows evicted beyond `capacity`.

The rows equal those of a whole-batch call when the encoder is batch-invariant (each prompt's
features independent of the others in its batch: true of these encoders on CPU, and checked by
`python -m train.bench_loop`, which compares a short seeded run with and without the cache).
`capacity` 0 passes every call through. Under FSDP the sharded text encoders must run on every
rank together, so the loop does not cache there (a hit on one rank and a miss on another would
leave a collective waiting).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from backbones.base import Conditioning


def _row(features, i: int):
    return features.index(slice(i, i + 1)) if isinstance(features, Conditioning) else features[i:i + 1]


def _stack(rows: list):
    return Conditioning.cat(rows) if isinstance(rows[0], Conditioning) else torch.cat(rows)


class PromptFeatureCache:
    def __init__(self, encode: Callable, capacity: int):
        self.encode, self.capacity = encode, int(capacity)
        self._rows: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, prompts: list[str]):
        if self.capacity <= 0:
            return self.encode(prompts)
        new = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        self.misses += len(new)
        self.hits += len(prompts) - len(new)
        if new:
            features = self.encode(new)
            for i, prompt in enumerate(new):
                self._rows[prompt] = _row(features, i)
        batch = _stack([self._rows[p] for p in prompts])
        for p in prompts:
            self._rows.move_to_end(p)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
        return batch
