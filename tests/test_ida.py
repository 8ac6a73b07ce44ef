"""IDA: fake <- lam * fake + (1 - lam) * gen, name-matched, parameters only."""
import copy
import socket

import pytest
import torch
from diffusers import SD3Transformer2DModel
from torch import nn

from backbones.toy import transformer_config
from train.ida import IDAMismatchError, ida_update


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


def dyadic_(net: nn.Module, seed: int) -> None:
    """Parameters on a grid of quarters, so lam = 0.75 mixing is exact in float32 in any order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-16, 17, p.shape, generator=g).float() / 4)


def test_exact_on_dyadic_values_and_buffers_untouched():
    fake, gen = small_net(0), small_net(1)
    dyadic_(fake, 2)
    dyadic_(gen, 3)
    with torch.no_grad():  # non-default buffers, to see that they are not mixed
        fake[1].running_mean.fill_(1.5)
        gen[1].running_mean.fill_(-7.0)
        gen[1].num_batches_tracked.fill_(11)
    lam = 0.75
    gen_before = {k: v.clone() for k, v in gen.state_dict().items()}
    fake_buffers = {k: v.clone() for k, v in fake.named_buffers()}
    expected = {n: lam * p.detach() + (1 - lam) * dict(gen.named_parameters())[n].detach()
                for n, p in fake.named_parameters()}
    assert ida_update(fake, gen, lam) == len(expected)
    for n, p in fake.named_parameters():
        assert torch.equal(p, expected[n]), n
    for n, b in fake.named_buffers():
        assert torch.equal(b, fake_buffers[n]), n
    for k, v in gen.state_dict().items():
        assert torch.equal(v, gen_before[k]), k


def test_tiny_sd3_transformer_matches_lerp_and_float64_reference():
    torch.manual_seed(0)
    fake = SD3Transformer2DModel(**transformer_config(layers=1, heads=2, head_dim=8, text_dim=16))
    gen = copy.deepcopy(fake)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lam = 0.98
    before = {n: p.detach().clone() for n, p in fake.named_parameters()}
    gen_p = dict(gen.named_parameters())
    ida_update(fake, gen, lam)
    changed = 0
    for n, p in fake.named_parameters():
        g = gen_p[n].detach()
        # lerp is the fused form of lam*f + (1-lam)*g: bit-identical to torch.lerp, <= 1 ulp from the exact value.
        assert torch.equal(p, torch.lerp(before[n], g, 1 - lam)), n
        exact = (lam * before[n].double() + (1 - lam) * g.double()).float()
        assert torch.allclose(p, exact, rtol=2e-7, atol=1e-9), n
        changed += int(not torch.equal(p, before[n]))
    assert changed == len(before)


def test_mixed_dtype_generator_is_cast_to_fake_dtype():
    fake, gen = small_net(0).to(torch.bfloat16), small_net(1)
    before = {n: p.detach().clone() for n, p in fake.named_parameters()}
    ida_update(fake, gen, 0.5)
    for n, p in fake.named_parameters():
        assert p.dtype == torch.bfloat16
        assert torch.equal(p, torch.lerp(before[n], dict(gen.named_parameters())[n].detach().bfloat16(), 0.5))


def test_mismatched_names_and_shapes_raise_before_modifying():
    fake = small_net(0)
    before = {k: v.clone() for k, v in fake.state_dict().items()}
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))  # no BatchNorm: names differ
    with pytest.raises(IDAMismatchError, match="only in fake"):
        ida_update(fake, other, 0.9)
    wider = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(IDAMismatchError, match="shape"):
        ida_update(fake, wider, 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ida_update(fake, small_net(1), 1.5)
    for k, v in fake.state_dict().items():
        assert torch.equal(v, before[k])


def test_fsdp2_dtensor_parameters_single_process():
    """fully_shard on a 1-rank gloo group: parameters are DTensors; the local-shard lerp must equal
    the lerp of the full tensors (multi-rank sharding is not testable on this machine)."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        fake, gen = small_net(0), small_net(1)
        full_before = {n: p.detach().clone() for n, p in fake.named_parameters()}
        full_gen = {n: p.detach().clone() for n, p in gen.named_parameters()}
        for net in (fake, gen):
            fully_shard(net[0], mesh=mesh)
            fully_shard(net, mesh=mesh)
        assert all(isinstance(p, DTensor) for p in fake.parameters())
        ida_update(fake, gen, 0.9)
        for n, p in fake.named_parameters():
            assert isinstance(p, DTensor)
            assert torch.equal(p.full_tensor(), torch.lerp(full_before[n], full_gen[n], 0.1)), n
        with pytest.raises(IDAMismatchError, match="sharded"):
            ida_update(fake, small_net(2), 0.9)  # DTensor vs plain tensor
    finally:
        dist.destroy_process_group()
