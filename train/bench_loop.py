"""Speed of the SenseFlow loop against the loop before its pure-speed changes, and against its own limit.

    python -m train.bench_loop [--params params.yaml] [--families toy,sd3,flux,sdxl] [--cycles 4]
                               [--rounds 5] [--out results/bench/loop.json]

For each family (assets as `train.bench_overhead`: the params' toy teacher/encoders, the tiny random
sd3/flux/sdxl configs of backbones/tiny.py), two runs of the real loop (`train.senseflow.train_step`,
every component as the family's preset has it, VFM on) are built side by side from the same seed:

- `before`: the loop as it was before the pure-speed changes: per-tensor AdamW updates;
- `after`: the loop as it is (multi-tensor AdamW: the same numbers in fewer, larger kernels).

1. Same results: both runs train `cycles` TTUR cycles on the same batches first; `same_results` says
   whether every trained weight (generator, fake score, discriminator heads) is bitwise equal.
2. Speed: then they take turns (order alternating) running `cycles` TTUR cycles per round; s/iter is
   the median over rounds and `speedup` = before / after (both measured in this one process).
3. Limit: one more block of the `after` run with every network pass timed where it runs (the
   denoiser forwards of generator, teacher and fake score, the discriminator forward and its reference
   features, the text encoders, VAE encode/decode, and every backward). On the CPU a pass
   runs synchronously, so its time in place is its time alone. `limit_ratio` = iteration time / time
   in passes: what the loop spends beyond the passes the algorithm must make (optimizer steps, loss
   arithmetic, Python). `passes` gives each pass's share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_file
from configs.params import load_params
from train.bench_overhead import _batch, each_family, parse_families
from train.senseflow import build_run, train_step, unwrap


def _per_tensor_adamw(run) -> None:
    """The `before` optimizers: the same AdamW hyper-parameters with the per-tensor update loop."""
    for name, (module, opt) in list(run.optimizers.items()):
        group = opt.param_groups[0]
        params = [p for g in opt.param_groups for p in g["params"]]
        run.optimizers[name] = (module, torch.optim.AdamW(params, lr=group["lr"], betas=group["betas"], eps=group["eps"],
                                                          weight_decay=group["weight_decay"], foreach=False))


def _weights(run) -> list[torch.Tensor]:
    nets = [unwrap(run.generator), unwrap(run.fake_score)]
    if run.discriminator is not None:
        nets.append(unwrap(run.discriminator).heads)
    return [p.detach() for net in nets for p in net.parameters()]


class PassTimer:
    """Wraps a run's network entry points (instance attributes only) and adds up the time spent in them."""

    def __init__(self, run):
        self.seconds, self.calls = defaultdict(float), defaultdict(int)
        bb = run.backbone
        names = {id(unwrap(run.generator)): "generator", id(run.teacher): "teacher", id(unwrap(run.fake_score)): "fake_score"}
        model_output = bb.model_output

        def timed_output(net, *args, **kwargs):
            grad = "grad" if torch.is_grad_enabled() else "no_grad"
            return self._timed(f"{names.get(id(unwrap(net)), 'other')} forward ({grad})", model_output, net, *args, **kwargs)

        bb.model_output = timed_output
        for attr, label in (("decode", "vae decode"), ("encode_images", "vae encode")):
            self._wrap(bb, attr, label)
        self._wrap(bb, "encode_prompts", "text encoders")
        if run.clip_text is not None:
            self._wrap(run.clip_text, "forward", "discriminator CLIP text")
        if run.discriminator is not None:
            self._wrap(run.discriminator, "forward", "discriminator forward")
            self._wrap(unwrap(run.discriminator), "reference_features", "discriminator reference features")
        self._wrap(run.accelerator, "backward", "backward")

    def _timed(self, label, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[label] += time.perf_counter() - t0
            self.calls[label] += 1

    def _wrapped(self, fn, label):
        return lambda *args, **kwargs: self._timed(label, fn, *args, **kwargs)

    def _wrap(self, obj, attr, label):
        setattr(obj, attr, self._wrapped(getattr(obj, attr), label))


def measure_family(settings: dict, cycles: int, rounds: int, root: Path) -> dict:
    before = build_run(settings, root / "before")
    _per_tensor_adamw(before)
    after = build_run(settings, root / "after")
    runs = {"before": before, "after": after}
    n = cycles * settings["ttur"]
    steps = {name: 0 for name in runs}

    def block(name: str) -> float:
        run, start = runs[name], steps[name]
        batches = [_batch(run, start + i) for i in range(n)]
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            train_step(run, start + i, *b)
        steps[name] += n
        return (time.perf_counter() - t0) / n

    first = {name: block(name) for name in runs}  # same batches, same seed: the results check
    pairs = list(zip(_weights(before), _weights(after)))
    same = all(torch.equal(a, b) for a, b in pairs)
    max_diff = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
    times = {name: [first[name]] for name in runs}
    for r in range(rounds):
        for name in (("before", "after") if r % 2 else ("after", "before")):
            times[name].append(block(name))
    s_per_iter = {name: statistics.median(v[1:]) for name, v in times.items()}  # the first block warms up

    timer = PassTimer(after)
    t0 = time.perf_counter()
    block("after")
    total = time.perf_counter() - t0
    in_passes = sum(timer.seconds.values())
    return {
        "s_per_iter": s_per_iter, "rounds_s_per_iter": times, "speedup": s_per_iter["before"] / s_per_iter["after"],
        "same_results": same, "max_abs_weight_diff": max_diff, "iterations_compared": n,
        "limit_ratio": total / in_passes, "passes_s_per_iter": {k: v / n for k, v in sorted(timer.seconds.items())},
        "passes_calls_per_iter": {k: v / n for k, v in sorted(timer.calls.items())},
        "ttur": settings["ttur"], "iterations_per_round": n, "rounds": rounds, "batch_size": settings["batch_size"],
        "preset": settings["preset"], "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--families", default="toy,sd3,flux,sdxl")
    ap.add_argument("--cycles", type=count(1), default=4, help="TTUR cycles per block")
    ap.add_argument("--rounds", type=count(1), default=5)
    ap.add_argument("--out", default="results/bench/loop.json")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    params = load_params(args.params)
    families = parse_families(ap, args.families)
    result = {"families": {}, "skipped": {},
              "method": "before/after built side by side from one seed; same_results after the first block; "
                        "interleaved rounds, median s/iter; limit = iteration time / time inside network passes"}
    for family, root, settings, notes in each_family(families, params, result, "bench_loop"):
        res = measure_family(settings, args.cycles, args.rounds, root)
        res["assets"] = notes
        result["families"][family] = res
        print(f"bench_loop: {family}: s/iter before {res['s_per_iter']['before']:.4f} after "
              f"{res['s_per_iter']['after']:.4f} (x{res['speedup']:.2f}), same results {res['same_results']}, "
              f"limit ratio {res['limit_ratio']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"bench_loop: wrote {out}")
    return result


if __name__ == "__main__":
    run_command(main)
