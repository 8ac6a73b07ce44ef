"""How the trainable networks are distributed, and their full (unsharded) state.

- DDP (default when world size > 1): accelerate's `prepare` wraps each module; `unwrap` gives the
  plain module back (parameter names without the `module.` prefix).
- FSDP2 (`train.fsdp: true`): `shard_like` applies `torch.distributed.fsdp.fully_shard` with one
  policy to the generator, the fake score and the EMA: every submodule whose class is in the
  model's `_no_split_modules` (the diffusers transformer/UNet blocks), innermost first, then the
  root. Identical architectures therefore get identical DTensor placements and local shapes, so
  the name-matched IDA lerp of local shards (`train.ida`) equals the lerp of the full tensors.

Full state dicts (for checkpoints and export) go through torch.distributed.checkpoint.state_dict,
which handles plain, DDP-unwrapped and fully_shard-ed modules alike: collective under FSDP (call it
on every rank), full tensors on CPU on rank 0.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
FULL_LOAD = StateDictOptions(full_state_dict=True)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Submodules to shard separately, innermost first: instances of the classes named in the
    model's `_no_split_modules`, or else the entries of its ModuleLists."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    if names:
        units = [m for m in model.modules() if type(m).__name__ in names and m is not model]
    else:
        units = [m for lst in model.modules() if isinstance(lst, nn.ModuleList) for m in lst]
    depth = {id(m): 0 for m in units}
    for m in units:  # innermost first: a unit that contains another unit comes after it
        for child in m.modules():
            if child is not m and id(child) in depth:
                depth[id(m)] = max(depth[id(m)], depth[id(child)] + 1)
    return sorted(units, key=lambda m: depth[id(m)])


def shard_like(model: nn.Module, mesh, cpu_offload: bool = False, reshard_after_forward: bool | None = None
               ) -> nn.Module:
    """fully_shard the units of `model` and then the model itself (in place; returns it). Works on
    a meta-device skeleton too (allocate afterwards with `to_empty`). `cpu_offload` keeps the
    sharded parameters, gradients and optimizer states in CPU memory (FSDP2 CPUOffloadPolicy);
    `reshard_after_forward=True` also frees the root's gathered parameters after each forward (for
    a frozen net that never runs a backward, e.g. the sharded teacher)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    policy = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, offload_policy=policy)
    fully_shard(model, mesh=mesh, offload_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def resharded(*modules: nn.Module) -> tuple[nn.Module, ...]:
    """The modules with every FSDP2 unit back in its sharded state (no-op for plain modules).
    FSDP2 keeps the root's parameters unsharded after a forward that no backward follows (e.g. the
    fake score's no-grad DMD call); IDA/EMA must lerp the sharded parameters the optimizer owns."""
    from torch.distributed.fsdp import FSDPModule

    for module in modules:
        for m in module.modules():
            if isinstance(m, FSDPModule):
                m.reshard()
    return modules


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict on CPU (every rank must call it under FSDP; non-rank-0 may get {})."""
    return get_model_state_dict(unwrap(model), options=FULL)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict into a plain or sharded module (every rank passes the full dict)."""
    set_model_state_dict(unwrap(model), state, options=FULL_LOAD)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """{'state': {param_name: {...}}, 'param_groups': [{..., 'params': [param_name, ...]}]}."""
    return get_optimizer_state_dict(unwrap(model), optimizer, options=FULL)


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(unwrap(model), optimizer, state, options=FULL_LOAD)


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (e.g. a sharded grad norm); plain tensors unchanged."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


__all__ = ["unwrap", "shard_units", "shard_like", "resharded", "full_model_state", "load_full_model_state",
           "full_optimizer_state", "load_full_optimizer_state", "full_tensor"]
