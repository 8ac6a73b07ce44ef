"""Per-iteration cost of ISG and IDA (paper Tab. 3), measured paired in one process.

    python -m train.bench_overhead [--params params.yaml] [--families toy,sd3,flux,sdxl]
                                   [--min-rounds 24] [--max-rounds 600] [--width 0.02]
                                   [--out results/bench/overhead.json] [--update]

For each family three runs of the real loop (`train.senseflow.train_step`, every other component as
the family's preset has it, VFM on) are built side by side: base (ISG off, IDA off), +ISG, +IDA.
After one untimed warm-up TTUR cycle, the three take every step in turn on the same batch, with
the run's `decisions` generator reseeded from (seed, step) so that they make the same
backward-simulation choices; every iteration is timed on its own (the garbage collector paused,
CUDA synchronised before and after). Round r (one TTUR cycle) uses the r-th of the six orders of
the three variants, so each is equally often first, second, third and after each other one. A paired
difference therefore compares the same work measured seconds apart (timing the variants in blocks
of iterations, as this benchmark first did, left the machine's drift between blocks in every
ratio: intervals of +-2 to +-4 points after 60 rounds).

ISG and IDA run only on generator turns (one iteration in `ttur`); the other iterations execute
the same code with and without them. So the overhead is the paired difference on generator turns,
over the base time of all iterations (per iteration, DESIGN.md's `isg_overhead` / `ida_overhead`)
or of the generator turns (on the turns where it runs). The difference on the other iterations is
reported separately (`*_other_iterations`, expected to contain 0: a warning is printed and
`other_iterations_contain_zero` says so when it does not) instead of adding its noise; the ratio
over all iterations, noise included, is kept as `*_overhead_all_iterations`. Each value has a 95 %
BCa bootstrap interval over rounds; from `min_rounds` on, every 6 rounds, the run stops once the
per-iteration ISG and IDA intervals are narrower than `width` (2 points by default), at
`max_rounds` at the latest; `converged` says whether they got there. The per-turn values are about
`ttur` times wider (the same differences over a fifth of the base time at TTUR 5) and are reported
with whatever width the rounds give (on the toy, 2 points per turn would take about 500 rounds).

Families: toy uses the params' teacher/encoders when they exist (otherwise random stand-ins of the
same architecture: timing depends only on shapes); sd3/flux/sdxl use the tiny random configs of
backbones/tiny.py and are skipped, with the reason printed, when those cannot be built.
Top-level `isg_overhead` / `ida_overhead` are the toy family's (the embedded default experiment).
`--update` re-measures only the families named in `--families` and keeps the others of an existing
`--out` as they are (e.g. one family whose intervals did not converge, re-run with more rounds), in
the file's order; a named family that cannot be built now keeps its earlier values. Families measured
with another torch thread count (recorded per family) or another method are refused before any
measurement, never mixed.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from configs.cli import ArgumentParser, CommandLineError, count, run_command
from configs.paths import writable_file
from configs.params import load_params
from train.batches import batch_indices
from train.settings import resolve
from train.senseflow import build_run, train_step

VARIANTS = {"base": {"isg": False, "ida": False}, "isg": {"isg": True, "ida": False}, "ida": {"isg": False, "ida": True}}
ORDERS = list(itertools.permutations(VARIANTS))  # the orders the variants take a step in, one per round
TINY_PRESETS = {"sd3": "sd35_medium", "flux": "flux", "sdxl": "sdxl"}


def _toy_stand_ins(train: dict, teacher_params: dict, root: Path) -> dict:
    """Paths for the toy family: the real assets where present, random same-shape stand-ins otherwise."""
    from transformers import CLIPModel, Dinov2Model

    from backbones.toy import ToyBackbone
    from toyworld.encoders import build_tokenizer, clip_config, dinov2_config

    paths, notes = {}, []
    teacher = Path(train.get("teacher") or "")
    if (teacher / "transformer").is_dir():
        paths["teacher"] = str(teacher)
    else:
        p = teacher_params
        ToyBackbone.new(p.get("layers", 4), p.get("heads", 4), p.get("head_dim", 32), p.get("text_width", 128),
                        p.get("text_layers", 2)).save(root / "teacher")
        paths["teacher"], notes = str(root / "teacher"), notes + ["random teacher of the configured size"]
    if (Path(train.get("clip") or "") / "config.json").is_file():
        paths["clip"] = train["clip"]
    else:
        tok = build_tokenizer()
        CLIPModel(clip_config(len(tok))).save_pretrained(root / "clip")
        tok.save_pretrained(root / "clip")
        paths["clip"], notes = str(root / "clip"), notes + ["random CLIP stand-in"]
    if (Path(train.get("vfm_backbone") or "") / "config.json").is_file():
        paths["vfm_backbone"] = train["vfm_backbone"]
    else:
        Dinov2Model(dinov2_config()).save_pretrained(root / "dinov2")
        paths["vfm_backbone"], notes = str(root / "dinov2"), notes + ["random DINOv2 stand-in"]
    if not Path(train.get("dataset") or "").is_file():
        paths["dataset"], notes = str(random_dataset(root / "data", 32)), notes + ["random images"]
    return {"paths": paths, "notes": notes}


def random_dataset(root: Path, size: int, n: int = 64) -> Path:
    """n random size x size images with four prompts, as an official SenseFlow dataset JSON."""
    import numpy as np
    from PIL import Image

    from protocols.dataset_json import write_dataset_json

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / "images" / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    prompts = ["a red circle", "two blue squares", "a green triangle left of a white circle", "three purple circles"]
    return write_dataset_json(root / "dataset.json", [str(i) for i in range(n)], paths, [prompts[i % 4] for i in range(n)])


def family_settings(family: str, params: dict, root: Path) -> tuple[dict, list[str]]:
    """Resolved train settings for the benchmark of `family` (raises to skip it)."""
    train = dict(params.get("train") or {})
    common = {"checkpoint_every": 10**9, "sample_every": 0, "vfm": True,
              "optimizer": "adamw", "fsdp": False, "shard_teacher": False}  # one CPU process; relative overheads
    if family == "toy":
        assets = _toy_stand_ins(train, params.get("teacher") or {}, root)
        return resolve({**train, **assets["paths"], **common}), assets["notes"]
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline
    from transformers import CLIPModel, Dinov2Model

    from backbones.tiny import flux_components, sd3_components, sdxl_components
    from toyworld.encoders import build_tokenizer, clip_config, dinov2_config

    pipe, components = {"sd3": (StableDiffusion3Pipeline, sd3_components), "flux": (FluxPipeline, flux_components),
                        "sdxl": (StableDiffusionXLPipeline, sdxl_components)}[family]
    pipe(**components(seed=0)).save_pretrained(root / "teacher")
    tok = build_tokenizer()
    CLIPModel(clip_config(len(tok), width=16, layers=1, heads=2, projection_dim=8)).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    Dinov2Model(dinov2_config(width=16, layers=2, heads=2)).save_pretrained(root / "dinov2")
    explicit = {"family": family, "preset": TINY_PRESETS[family], "teacher": str(root / "teacher"),
                "clip": str(root / "clip"), "vfm_backbone": str(root / "dinov2"),
                "dataset": str(random_dataset(root / "data", 32, 16)), "resolution": 32, "batch_size": 2,
                "precision": "fp32", "vfm_downsample": 1, "threads": train.get("threads") or 0, **common}
    return resolve(explicit), ["tiny random config (backbones/tiny.py)"]


def parse_families(ap, text: str) -> list[str]:
    families = [f.strip() for f in text.split(",") if f.strip()]
    unknown = sorted(set(families) - {"toy", *TINY_PRESETS})
    if unknown:
        ap.error(f"unknown families {unknown}; choose from toy, {', '.join(TINY_PRESETS)}")
    return families


def each_family(families: list[str], params: dict, result: dict, label: str):
    """(family, root, settings, notes) for every family that can be built, each in its own temporary
    folder; a family that cannot be built is recorded in result["skipped"] and printed, not fatal."""
    with tempfile.TemporaryDirectory(prefix=f"{label}_") as tmp:
        for family in families:
            root = Path(tmp) / family
            root.mkdir()
            try:
                settings, notes = family_settings(family, params, root)
            except Exception as e:
                result["skipped"][family] = f"{type(e).__name__}: {e}"
                print(f"{label}: skipping {family}: {result['skipped'][family]}")
                continue
            yield family, root, settings, notes


def _batch(run, step):
    s = run.settings
    idx = batch_indices(step, len(run.data), s["batch_size"], s["seed"])
    return torch.stack([run.data[i][0] for i in idx]), [run.data[i][1] for i in idx]


def ratio_interval(added: list[float], base: list[float], level: float = 0.95, seed: int = 0) -> dict:
    """sum(added) / sum(base) with a BCa bootstrap interval over paired cycles (scipy.stats.bootstrap)."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(added, dtype=np.float64), np.asarray(base, dtype=np.float64)
    mean = float(a.sum() / b.sum())
    lo = hi = math.nan
    if not a.any():  # no difference at all (the same code timed identically): nothing to resample
        lo = hi = 0.0
    elif len(a) > 2:
        res = stats.bootstrap((a, b), lambda x, y, axis: x.sum(axis) / y.sum(axis), paired=True, vectorized=True,
                              confidence_level=level, n_resamples=4000, method="BCa", random_state=seed)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # too few cycles (or all equal): no interval yet
        lo, hi = -math.inf, math.inf
    return {"mean": mean, "lo": lo, "hi": hi, "width": hi - lo, "rounds": len(a)}


def overhead_estimates(cycles: list[dict], components=("isg", "ida")) -> dict:
    """Overheads from paired cycles (each {variant: [seconds per iteration]}, "generator": [bool]).

    A component runs only on generator turns, so its cost is the paired difference there:
    per iteration = sum(t_with - t_base on generator turns) / sum(t_base on all iterations),
    on generator turns = the same difference / sum(t_base on generator turns). The other iterations
    run the same code with and without it; their paired difference (`other_iterations`, relative to
    their base time) is reported as a check that it is timing noise around 0, and left out of the
    estimate, where it would only add that noise."""
    out = {}
    base_all = [sum(c["base"]) for c in cycles]
    base_gen = [sum(t for t, g in zip(c["base"], c["generator"]) if g) for c in cycles]
    base_rest = [sum(t for t, g in zip(c["base"], c["generator"]) if not g) for c in cycles]
    for comp in components:
        gen = [sum(t - b for t, b, g in zip(c[comp], c["base"], c["generator"]) if g) for c in cycles]
        rest = [sum(t - b for t, b, g in zip(c[comp], c["base"], c["generator"]) if not g) for c in cycles]
        out[f"{comp}_iteration"] = ratio_interval(gen, base_all)
        out[f"{comp}_generator_turn"] = ratio_interval(gen, base_gen)
        out[f"{comp}_other_iterations"] = ratio_interval(rest, base_rest) if any(base_rest) else None
        out[f"{comp}_all_iterations"] = ratio_interval([g + r for g, r in zip(gen, rest)], base_all)
    return out


def measure_family(settings: dict, root: Path, min_rounds: int = 24, max_rounds: int = 600,
                   width: float = 0.02) -> dict:
    """Paired timing of base / +ISG / +IDA: at every step the three runs take that step in turn on
    the same batch and the same backward-simulation choices, so each difference compares the same
    work measured seconds apart. A round is one TTUR cycle; round r runs the variants in the r-th of
    the 6 orders (every variant equally often first, second, third and after each other one, at
    generator turns too, whatever `ttur` is). Every 6 rounds from `min_rounds` on, the stop is checked:
    the per-iteration ISG and IDA intervals narrower than `width`."""
    runs = {name: build_run({**settings, **change}, root / f"run_{name}") for name, change in VARIANTS.items()}
    ttur = settings["ttur"]
    cuda = torch.cuda.is_available()

    def timed(name: str, step: int) -> float:
        run = runs[name]
        batch = _batch(run, step)
        # same control-flow draws (backward simulation or not) in every variant at a given step,
        # so that ISG's extra draws do not change how much work the variants' later steps do
        run.rngs["decisions"].manual_seed(settings["seed"] * 1_000_003 + step)
        if cuda:
            torch.cuda.synchronize()  # the previous run's queued work is not billed to this one
        t0 = time.perf_counter()
        train_step(run, step, *batch)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step = 0
    for _ in range(ttur):  # warm-up: one TTUR cycle each (allocator, lazy inits), not timed
        for name in VARIANTS:
            timed(name, step)
        step += 1
    cycles: list[dict] = []
    keys = ["isg_iteration", "ida_iteration"]  # the contract's overheads; the per-turn ones are wider (x ttur)
    while len(cycles) < max_rounds:
        order = ORDERS[len(cycles) % len(ORDERS)]
        cycle: dict = {name: [] for name in VARIANTS} | {"generator": []}
        gc.collect()
        gc.disable()  # the collector runs between cycles, not inside a timed step
        try:
            for _ in range(ttur):
                for name in order:
                    cycle[name].append(timed(name, step))
                cycle["generator"].append(step % ttur == 0)
                step += 1
        finally:
            gc.enable()
        cycles.append(cycle)
        if len(cycles) >= min_rounds and len(cycles) % len(ORDERS) == 0:
            summary = overhead_estimates(cycles)
            if all(summary[k]["width"] < width for k in keys):
                break
    summary = overhead_estimates(cycles)
    per_iter = {name: statistics.fmean(t for c in cycles for t in c[name]) for name in VARIANTS}
    per_turn = {name: statistics.fmean(t for c in cycles for t, g in zip(c[name], c["generator"]) if g)
                for name in VARIANTS}
    checks = {c: summary[f"{c}_other_iterations"] is None or
              summary[f"{c}_other_iterations"]["lo"] <= 0 <= summary[f"{c}_other_iterations"]["hi"]
              for c in ("isg", "ida")}
    for c, ok in checks.items():
        if not ok:
            print(f"bench_overhead: warning: {c.upper()} changed the time of the iterations where it does not run "
                  f"({_fmt(summary[f'{c}_other_iterations'])}); compare {c}_overhead_all_iterations")
    return {"s_per_iter": per_iter, "s_per_generator_turn": per_turn,
            "isg_overhead": summary["isg_iteration"]["mean"], "ida_overhead": summary["ida_iteration"]["mean"],
            "isg_overhead_interval": summary["isg_iteration"], "ida_overhead_interval": summary["ida_iteration"],
            "isg_overhead_generator_turn": summary["isg_generator_turn"],
            "ida_overhead_generator_turn": summary["ida_generator_turn"],
            "isg_other_iterations": summary["isg_other_iterations"],
            "ida_other_iterations": summary["ida_other_iterations"],
            "other_iterations_contain_zero": checks,
            "isg_overhead_all_iterations": summary["isg_all_iterations"],
            "ida_overhead_all_iterations": summary["ida_all_iterations"],
            "converged": all(summary[k]["width"] < width for k in keys), "target_width": width,
            # per TTUR cycle: seconds per iteration of each variant (first iteration = the generator turn)
            "rounds_s": [{k: [round(t, 6) for t in v] if k != "generator" else v for k, v in c.items()}
                         for c in cycles],
            "ttur": ttur, "rounds": len(cycles), "iterations_per_round": ttur,
            "batch_size": settings["batch_size"], "preset": settings["preset"]}


def _fmt(iv: dict) -> str:
    return f"{iv['mean']:+.2%} [{iv['lo']:+.2%}, {iv['hi']:+.2%}]"


def _earlier_result(out: Path) -> dict | None:
    """The benchmark result already at `out` (for --update), None when there is none."""
    if not out.is_file():
        return None
    try:
        earlier = json.loads(out.read_text())
        if not isinstance(earlier["families"], dict):
            raise TypeError("'families' is not a mapping")
        return earlier
    except (ValueError, KeyError, TypeError) as err:
        raise CommandLineError(f"--update needs a benchmark result at --out ({out}): it cannot be read ({err}); "
                               "choose another --out or run without --update") from None


def _family_threads(result: dict, family: dict) -> int:
    """The torch thread count a family was measured with (files before per-family records: the file's)."""
    return int(family.get("torch_threads", result.get("torch_threads")))


def _check_method(out: Path, earlier: dict, result: dict) -> None:
    """--update: the earlier file was measured with this run's method, else refuse."""
    if earlier.get("method") != result["method"]:
        raise CommandLineError(f"--update: {out} was measured with another method; its families cannot be mixed "
                               "with this run's: re-measure all of them, or write to another --out")


def _check_threads(out: Path, earlier: dict, family: str, threads: int, named: list[str]) -> None:
    """--update: the kept families were measured with the thread count `family` runs with now, else refuse."""
    other = {name: _family_threads(earlier, fam) for name, fam in earlier["families"].items() if name not in named}
    differ = {name: n for name, n in other.items() if n != threads}
    if differ:
        raise CommandLineError(f"--update: {out} has families measured with another torch thread count ({differ}; "
                               f"{family} now runs with {threads}); re-measure all of them, or write to another --out")


def _merged(earlier: dict, result: dict, named: list[str]) -> None:
    """--update: this run's families replace the earlier ones in place (the earlier order, new ones after);
    a family of the earlier file that this run did not measure (not named, or skipped now) keeps its
    values; the earlier `skipped` entries of families not named are kept."""
    measured = result["families"]
    kept = [name for name in earlier["families"] if name not in measured]
    for name in kept:
        if name in named:
            print(f"bench_overhead: {name} could not be measured now: its earlier values are kept")
    if kept:
        print(f"bench_overhead: keeping {', '.join(kept)} from the earlier file")
    order = [*earlier["families"], *[name for name in measured if name not in earlier["families"]]]
    # a kept family carries its own thread count (earlier files: their top-level one), not this run's
    result["families"] = {name: measured[name] if name in measured else
                          {**earlier["families"][name], "torch_threads": _family_threads(earlier, earlier["families"][name])}
                          for name in order}
    result["skipped"] = {**{k: v for k, v in earlier.get("skipped", {}).items() if k not in named},
                         **result["skipped"]}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--families", default="toy,sd3,flux,sdxl")
    ap.add_argument("--min-rounds", type=count(2), default=24, help="TTUR cycles before the first stopping check "
                    "(checked every 6 cycles: each order of the three variants once)")
    ap.add_argument("--max-rounds", type=count(2), default=600, help="at most this many TTUR cycles per family")
    ap.add_argument("--width", type=float, default=0.02, help="stop when every 95%% interval is narrower than this")
    ap.add_argument("--out", default="results/bench/overhead.json")
    ap.add_argument("--update", action="store_true", help="keep the families of an existing --out that "
                    "--families does not name (re-measure only those named)")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    params = load_params(args.params)
    families = parse_families(ap, args.families)
    result = {"families": {}, "skipped": {}, "torch_threads": torch.get_num_threads(),
              "method": "paired steps: base, +ISG and +IDA take each step in turn (the six orders in turn, one per round) on the same "
                        "batch and backward-simulation choices; overhead = sum of the paired time differences on "
                        "generator turns (where ISG and IDA run) / sum of base time (all iterations: per "
                        "iteration; generator turns: per turn); rounds = TTUR cycles; 95 % BCa bootstrap "
                        "interval over rounds; *_other_iterations: the same difference on the other iterations "
                        "(a check: should contain 0); the run stops when the per-iteration intervals are narrower than the target"}
    earlier = _earlier_result(Path(args.out)) if args.update else None
    if earlier is not None:
        _check_method(Path(args.out), earlier, result)
    for family, root, settings, notes in each_family(families, params, result, "bench_overhead"):
        threads = int(settings.get("threads") or torch.get_num_threads())  # what build_run will set
        if earlier is not None:  # before the measurement: nothing is spent on a result that cannot be kept
            _check_threads(Path(args.out), earlier, family, threads, families)
        print(f"bench_overhead: {family} ({', '.join(notes) or 'configured assets'})")
        res = measure_family(settings, root, args.min_rounds, max(args.min_rounds, args.max_rounds), args.width)
        res["assets"] = notes
        res["torch_threads"] = torch.get_num_threads()
        result["families"][family] = res
        print(f"  s/iter {json.dumps({k: round(v, 4) for k, v in res['s_per_iter'].items()})}  "
              f"ISG {_fmt(res['isg_overhead_interval'])} per iteration, {_fmt(res['isg_overhead_generator_turn'])} "
              f"per generator turn; IDA {_fmt(res['ida_overhead_interval'])}, {_fmt(res['ida_overhead_generator_turn'])}"
              f" ({res['rounds']} rounds{'' if res['converged'] else ', intervals not yet narrower than the target'})")
    if earlier is not None:
        _merged(earlier, result, families)
    reference = "toy" if "toy" in result["families"] else next(iter(result["families"]), None)
    if reference is not None:
        result["reference_family"] = reference
        result["isg_overhead"] = result["families"][reference]["isg_overhead"]
        result["ida_overhead"] = result["families"][reference]["ida_overhead"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"bench_overhead: wrote {out}")
    return result


if __name__ == "__main__":
    run_command(main)
