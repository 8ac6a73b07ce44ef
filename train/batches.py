"""Which dataset rows iteration `step` trains on: a pure function of (seed, step, rank), so a
resumed run reads exactly the batches the uninterrupted run would have read.

Rows are visited in epochs; each epoch is a fresh permutation drawn from (seed, epoch). The
global batch of an iteration is `batch_size * world_size` consecutive positions of that stream,
and rank r takes the r-th slice of `batch_size`.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.data import Sampler


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    start = (step * world_size + rank) * batch_size
    return [int(_permutation(n, seed, q // n)[q % n]) for q in range(start, start + batch_size)]


class StepBatchSampler(Sampler):
    """Batch sampler for a DataLoader: the batches of iterations start..steps-1."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.steps, self.rank, self.world_size = start, steps, rank, world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield batch_indices(step, self.n, self.batch_size, self.seed, self.rank, self.world_size)


__all__ = ["batch_indices", "StepBatchSampler"]
