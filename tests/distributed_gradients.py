"""Gradient audit of the SenseFlow loop at every precision and sharding, launched by
tests/test_senseflow_gradients.py as

    ACCELERATE_USE_CPU=true torchrun --nproc_per_node <1|2> tests/distributed_gradients.py <workdir>

<workdir>/assets.json holds the tiny asset paths (toy teacher, tiny sd3/flux/sdxl teachers, CLIP,
DINOv2, data). For every family and precision (fp32, bf16) and every layout this world size allows
(1 process: plain; 2 processes: DDP and FSDP2) it trains a few iterations with every component on,
backward simulation forced (so the generator runs no-grad forwards before its grad forward) and
TTUR 2, and records, for every optimizer step, how many parameters got no usable gradient
(`params_without_grad_<net>`, computed by the loop over all ranks' shards), which optimizers
stepped, the backward-simulation anchors, and the final weights. Rank 0 writes
<workdir>/gradients_<world>.json; with 2 processes it also compares FSDP2 with DDP.
"""
import json
import sys
from pathlib import Path

import torch

import train.senseflow as senseflow
from train.tiny_assets import tiny_family_settings
from train.batches import batch_indices
from train.sharding import full_model_state, unwrap

ITERATIONS = 4  # TTUR 2: generator turns at iterations 0 and 2


def trained_state(run) -> dict[str, torch.Tensor]:
    """Full weights of the trained nets (collective under FSDP; meaningful on rank 0)."""
    out = {f"generator.{k}": v.detach().float().clone() for k, v in full_model_state(run.generator).items()}
    out.update({f"fake_score.{k}": v.detach().float().clone() for k, v in full_model_state(run.fake_score).items()})
    out.update({f"heads.{k}": v.detach().float().cpu().clone()
                for k, v in unwrap(run.discriminator).heads.state_dict().items()})
    return out


def audit(settings: dict, out: Path) -> tuple[dict, dict, dict]:
    anchors_seen = []
    real_input = senseflow.generator_input

    def recording_input(*args, **kwargs):
        inp = real_input(*args, **kwargs)
        anchors_seen.append(int(inp.anchor_index[0]))
        return inp

    senseflow.generator_input = recording_input
    try:
        run = senseflow.build_run(settings, out)
        initial = trained_state(run)
        steps = []
        rank, world = run.accelerator.process_index, run.accelerator.num_processes
        for step in range(ITERATIONS):
            idx = batch_indices(step, len(run.data), settings["batch_size"], settings["seed"], rank, world)
            images = torch.stack([run.data[i][0] for i in idx])
            logs = senseflow.train_step(run, step, images, [run.data[i][1] for i in idx])
            steps.append({k: v for k, v in logs.items() if k.startswith(("params_without_grad_", "grad_norm_"))})
        final = trained_state(run)
        counts = {name: sum(1 for _ in module.parameters()) for name, (module, _) in run.optimizers.items()}
    finally:
        senseflow.generator_input = real_input
    return {"steps": steps, "backsim_anchors": anchors_seen, "parameters": counts}, initial, final


def main():
    work = Path(sys.argv[1])
    assets = json.loads((work / "assets.json").read_text())
    torch.set_num_threads(1)
    import torch.distributed as dist
    from accelerate import Accelerator

    state = Accelerator()  # reads ACCELERATE_USE_CPU, as the loop's own Accelerator does
    world = state.num_processes
    layouts = ["plain"] if world == 1 else ["ddp", "fsdp"]
    result = {"world_size": world, "runs": {}, "fsdp_vs_ddp": {}}
    for family in ("toy", "sd3", "flux", "sdxl"):
        for precision in ("fp32", "bf16"):
            states = {}
            for layout in layouts:
                settings = tiny_family_settings(assets, family, precision=precision, fsdp=layout == "fsdp",
                                                shard_teacher=layout == "fsdp", backsim_prob=1.0, ttur=2)
                record, initial, final = audit(settings, work / f"{family}_{precision}_{layout}_{world}")
                result["runs"][f"{family}/{precision}/{layout}"] = record
                states[layout] = (initial, final)
            if world == 2 and state.is_main_process:
                (init, ddp), (_, fsdp) = states["ddp"], states["fsdp"]
                per_net = {}
                for net in ("generator", "fake_score", "heads"):
                    keys = [k for k in ddp if k.startswith(net + ".")]
                    # L2 over the whole net: how far FSDP2 ended from DDP, relative to how far DDP moved
                    moved = float(torch.cat([(ddp[k] - init[k]).flatten() for k in keys]).norm())
                    apart = float(torch.cat([(fsdp[k] - ddp[k]).flatten() for k in keys]).norm())
                    per_net[net] = {"moved": moved, "fsdp_minus_ddp": apart, "relative": apart / max(moved, 1e-30)}
                result["fsdp_vs_ddp"][f"{family}/{precision}"] = per_net
    if state.is_main_process:
        (work / f"gradients_{world}.json").write_text(json.dumps(result, indent=1))
    state.wait_for_everyone()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
