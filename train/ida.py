"""Implicit distribution alignment (IDA, paper Sec. 3.2): after each generator update pull the
fake score's parameters toward the generator's, phi <- lam * phi + (1 - lam) * theta.

Released code (senseflow_code.md section 4): the same update, name-matched over
`named_parameters()`, right after the generator's optimizer step and before the fake score's
own step; lam = 0.98 (SD3.5-M), 0.97 (SD3.5-L, FLUX). The fake optimizer's moments are not
touched. Buffers are not touched either.

Sharded parameters: with FSDP2 (`torch.distributed.fsdp.fully_shard`) every parameter is a
DTensor. When both models are sharded identically (same mesh, placements and local shapes,
which `fully_shard` gives two copies of one architecture), lerping the local shards is the
same as lerping the full tensors, so we update `to_local()` views in place (no all-gather and
no `.data` on a DTensor). A placement/shape mismatch is raised, never silently mis-mixed.
"""
from __future__ import annotations

import torch
from torch import nn

from configs.cli import UserError


try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    DTensor = None


class IDAMismatchError(UserError, ValueError):
    """The fake score and the generator do not have the same parameter names/shapes/sharding."""


def _is_dtensor(p: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(p, DTensor)


def _local_pair(name: str, fake: torch.Tensor, gen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors to lerp for one name: plain tensors, or the local shards of two DTensors."""
    if fake.shape != gen.shape:
        raise IDAMismatchError(f"IDA: parameter {name!r} has shape {tuple(fake.shape)} in the fake score "
                               f"but {tuple(gen.shape)} in the generator")
    if _is_dtensor(fake) != _is_dtensor(gen):
        raise IDAMismatchError(f"IDA: parameter {name!r} is sharded (DTensor) in only one of the two models; "
                               f"wrap the fake score and the generator the same way")
    if _is_dtensor(fake):
        if fake.placements != gen.placements or fake.device_mesh != gen.device_mesh:
            raise IDAMismatchError(f"IDA: parameter {name!r} is sharded differently "
                                   f"({fake.placements} vs {gen.placements}); shard both models identically")
        fake, gen = fake.to_local(), gen.to_local()
        if fake.shape != gen.shape:
            raise IDAMismatchError(f"IDA: local shards of {name!r} differ ({tuple(fake.shape)} vs {tuple(gen.shape)})")
    if gen.dtype != fake.dtype or gen.device != fake.device:
        gen = gen.to(device=fake.device, dtype=fake.dtype)
    return fake, gen


@torch.no_grad()
def ida_update(fake_net: nn.Module, generator_net: nn.Module, lam: float) -> int:
    """In place, for every parameter matched by name: fake <- lam * fake + (1 - lam) * gen
    (computed as `lerp(fake, gen, 1 - lam)`, one fused `_foreach_lerp_`).

    Both modules must expose identical `named_parameters()` names and shapes (for sharded
    models: identical sharding); otherwise `IDAMismatchError` names the offending parameters
    before anything is modified. All parameters are mixed, trainable or not (the released code
    skips generator parameters with requires_grad=False; with a fully fine-tuned generator the
    two sets coincide). lam in [0, 1]; lam = 1 is a no-op. Returns the number of tensors updated.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"IDA lambda must be in [0, 1], got {lam}")
    fake_params = dict(fake_net.named_parameters())
    gen_params = dict(generator_net.named_parameters())
    if fake_params.keys() != gen_params.keys():
        only_fake = sorted(fake_params.keys() - gen_params.keys())
        only_gen = sorted(gen_params.keys() - fake_params.keys())
        raise IDAMismatchError(
            f"IDA needs the fake score and the generator to have the same parameter names; "
            f"only in fake: {only_fake[:5]}{' ...' if len(only_fake) > 5 else ''}, "
            f"only in generator: {only_gen[:5]}{' ...' if len(only_gen) > 5 else ''}. "
            f"Initialise both from the same teacher and wrap them identically."
        )
    pairs = [_local_pair(name, fake_params[name], gen_params[name]) for name in fake_params]
    if not pairs or lam == 1.0:
        return 0
    fakes, gens = zip(*pairs)
    torch._foreach_lerp_(list(fakes), list(gens), 1.0 - lam)
    return len(pairs)
