"""Two-process checks of the SenseFlow loop, launched by tests/test_senseflow_distributed.py as

    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 tests/distributed_senseflow.py <workdir>

<workdir>/assets.json holds the tiny asset paths; rank 0 writes <workdir>/result.json with:
world size, IDA on FSDP2-sharded nets vs the unsharded formula, the loop under DDP vs FSDP2 (fp32), and
an FSDP2 + bf16 run killed mid-way and resumed from its sharded checkpoint vs the uninterrupted one, and
an FSDP2 + bf16 run whose probe Fréchet distance fails (clean-fid's singular covariances at small N) at
every evaluation: it must train to the end, with those points logged without FD.
"""
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

import train.senseflow as senseflow
from backbones.toy import ToyBackbone
from train.tiny_assets import tiny_settings
from train.ida import ida_update
from train.sharding import full_model_state, full_optimizer_state, resharded, shard_like, unwrap


def everything(run) -> dict[str, torch.Tensor]:
    """Full trained state (collective under FSDP; meaningful on rank 0)."""
    out = {f"gen.{k}": v for k, v in full_model_state(run.generator).items()}
    out.update({f"fake.{k}": v for k, v in full_model_state(run.fake_score).items()})
    out.update({f"heads.{k}": v.detach().clone() for k, v in unwrap(run.discriminator).heads.state_dict().items()})
    for name, (module, opt) in run.optimizers.items():
        for pname, st in full_optimizer_state(module, opt).get("state", {}).items():  # {} off rank 0
            out.update({f"opt.{name}.{pname}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return out


def replicas_in_sync(*modules) -> bool:
    """Every parameter and buffer of these (replicated) modules equals rank 0's copy."""
    same = True
    for module in modules:
        for v in list(module.parameters()) + list(module.buffers()):
            ref = v.detach().clone()
            torch.distributed.broadcast(ref, 0)
            same &= torch.equal(ref, v.detach())
    flag = torch.tensor(float(same))
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag)


def sharded_ida_check(world: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    bb = ToyBackbone.new(layers=2, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)  # same on all ranks
    fake, gen = bb.init_student(), bb.init_student()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    expected = {n: torch.lerp(p.detach(), dict(gen.named_parameters())[n].detach(), 0.1)
                for n, p in fake.named_parameters()}
    mesh = init_device_mesh("cpu", (world,))
    shard_like(fake, mesh)
    shard_like(gen, mesh)
    params = dict(fake.named_parameters())
    sharded = all(isinstance(p, DTensor) for p in params.values())
    split = any(p.to_local().numel() < p.numel() for p in params.values())
    ida_update(fake, gen, 0.9)
    equal = all(torch.equal(p.full_tensor(), expected[n]) for n, p in fake.named_parameters())
    return {"ida_params_dtensor": sharded, "ida_params_split": split, "ida_sharded_equals_formula": equal}


def main():
    work = Path(sys.argv[1])
    state = Accelerator()  # reads ACCELERATE_USE_CPU, as the loop's own Accelerator does
    result = {"world_size": state.num_processes, "distributed_type": str(state.distributed_type)}
    assert state.num_processes == 2, f"expected 2 processes, got {state.num_processes}"
    result.update(sharded_ida_check(state.num_processes))

    assets = json.loads((work / "assets.json").read_text())
    base = tiny_settings(assets, steps=4, ttur=2, ema=0.0)
    ddp_run = senseflow.train(base, work / "ddp", resume="fresh")
    result["ddp_replicas_in_sync"] = replicas_in_sync(unwrap(ddp_run.generator), unwrap(ddp_run.fake_score),
                                                      unwrap(ddp_run.discriminator).heads)
    ddp = everything(ddp_run)
    fsdp_run = senseflow.train({**base, "fsdp": True}, work / "fsdp", resume="fresh")
    resharded(fsdp_run.generator)
    result["fsdp_generator_is_dtensor"] = all(type(p).__name__ == "DTensor" for p in fsdp_run.generator.parameters())
    result["fsdp_heads_in_sync"] = replicas_in_sync(unwrap(fsdp_run.discriminator).heads)
    fsdp = everything(fsdp_run)

    # kill-and-resume under FSDP2 + bf16 + 8-bit AdamW (the released SD 3.5 Large / FLUX setting):
    # sharded checkpoints, fp32 masters, 8-bit optimizer states
    bf16 = {**base, "fsdp": True, "precision": "bf16", "optimizer": "adamw8bit"}
    straight = everything(senseflow.train(bf16, work / "fsdp_bf16", resume="fresh"))
    real_step = senseflow.train_step

    def crash_at_3(run, step, *a):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_step(run, step, *a)

    senseflow.train_step = crash_at_3
    try:
        senseflow.train(bf16, work / "fsdp_resumed", resume="fresh")
    except KeyboardInterrupt:
        pass
    senseflow.train_step = real_step
    resumed_run = senseflow.train(bf16, work / "fsdp_resumed", resume="require")
    resumed = everything(resumed_run)
    # the probe's Fréchet distance fails at every evaluation (as clean-fid does with singular covariances at
    # N < feature dims): the run must not end, nor the other rank wait for ever; the points have no FD
    import train.probe as probe
    from measures.frechet import FrechetError

    real_fd = probe.fd

    def failing_fd(*a):
        raise FrechetError("simulated: the covariance product's square root has a large imaginary part")

    probe.fd = failing_fd
    try:
        no_fd_run = senseflow.train(bf16, work / "fsdp_bf16_no_fd", resume="fresh")
    finally:
        probe.fd = real_fd
    result["no_fd_run_finished"] = (work / "fsdp_bf16_no_fd" / "student").is_dir()
    no_fd = everything(no_fd_run)  # collective: every rank
    result["no_fd_equals_straight"] = state.is_main_process and sorted(no_fd) == sorted(straight) and all(
        torch.equal(v, straight[k]) for k, v in no_fd.items())
    result["master_weights_fp32"] = all(p.dtype == torch.float32 for net in (resumed_run.generator, resumed_run.fake_score)
                                        for p in net.parameters())

    if state.is_main_process:
        from safetensors.torch import load_file

        keys = sorted(fsdp)
        result["same_keys"] = keys == sorted(resumed) == sorted(ddp) == sorted(straight)
        result["fsdp_resume_not_equal"] = [k for k in keys if not torch.equal(straight[k], resumed[k])]
        params = [k for k in keys if not k.startswith("opt.")]
        result["ddp_vs_fsdp_max_abs_diff"] = max(float((fsdp[k].float() - ddp[k].float()).abs().max()) for k in params)
        for name, state_ in (("fsdp", fsdp), ("fsdp_bf16", straight)):
            exported = load_file(str(work / name / "student" / "transformer" / "diffusion_pytorch_model.safetensors"))
            result[f"{name}_export_equals_generator"] = all(
                v.dtype == torch.float32 and torch.equal(v, state_[f"gen.{k}"]) for k, v in exported.items())
        # metrics along training (toy preset: eval_every 100 -> iteration 0 and the end) under FSDP2 + bf16,
        # sampled by both ranks; a kill and resume gives the uninterrupted run's points
        curves = {name: [json.loads(line) for line in (work / name / "along_training.jsonl").read_text().splitlines()]
                  for name in ("ddp", "fsdp", "fsdp_bf16", "fsdp_resumed", "fsdp_bf16_no_fd")}
        result["no_fd_points"] = [sorted(k for k in p if k not in ("step", "probe")) for p in curves.pop("fsdp_bf16_no_fd")]
        result["along_training_steps"] = {name: [p["step"] for p in points] for name, points in curves.items()}
        result["along_training_resumed_equals_straight"] = curves["fsdp_resumed"] == curves["fsdp_bf16"]
        result["along_training_ddp_vs_fsdp"] = max(abs(a[k] - b[k]) / max(1e-6, abs(a[k])) for a, b in
                                                   zip(curves["ddp"], curves["fsdp"]) for k in a if k not in ("step", "probe"))
        ckpt = work / "fsdp_resumed" / "checkpoints" / "step_4"
        result["sharded_checkpoint_files"] = sorted(p.name for p in ckpt.iterdir())
        result["sharded_checkpoint_has_no_weights_outside_shards"] = not list(ckpt.glob("transformer/*.safetensors"))
        from train.export_checkpoint import export_checkpoint

        offline = load_file(str(export_checkpoint(ckpt, work / "offline") / "diffusion_pytorch_model.safetensors"))
        result["offline_export_equals_generator"] = all(torch.equal(v, resumed[f"gen.{k}"]) for k, v in offline.items())
        import torch.distributed.checkpoint as dcp

        meta = dcp.FileSystemReader(str(ckpt / "sharded")).read_metadata()
        dtypes = {str(m.properties.dtype) for k, m in meta.state_dict_metadata.items()
                  if k.startswith(("generator.", "fake_score.")) and hasattr(m, "properties")}
        result["sharded_checkpoint_dtypes"] = sorted(dtypes)
        (work / "result.json").write_text(json.dumps(result, indent=2))
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
