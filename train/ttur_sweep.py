"""The paper's Fig. 3 experiment: TTUR 5/10/20 with and without IDA, compared on how much the
metrics along training oscillate.

    python -m train.ttur_sweep [--params params.yaml] [--ttur 5 10 20] [--generator-updates 60]
                               [--evals 12] [--seeds 0] [--runs runs/ttur] [--out results/ttur]
                               [--on-change refuse|supersede]

Every (ttur, ida, seed) is one run of the SenseFlow loop (`train.senseflow`, the `full` variant with
train.ttur and train.ida set) for the same number of generator updates, so steps = ttur x
generator_updates, with the probe (train/probe.py: fixed prompts and noise) every
ttur x generator_updates / evals iterations: every curve has its points at the same generator
updates. Run folders are <runs>/ttur<T>-ida_<on|off>-<seed>; every run goes through the loop's own start
rules (train/run_folder.py): an interrupted run resumes, a finished one is only reloaded, and a folder
of other settings is refused (`--on-change supersede` moves it to <run>.superseded/ and starts over). A
curve whose evaluations are not this sweep's (e.g. another --evals) is refused, never mixed.

Per run (`results/ttur/sweep.json`, table in `sweep.md`):
- fd_final: the probe's Fréchet distance to the teacher at the last evaluation (FD-T; ToyWorld
  features on the toy, Inception FID-T on a real family);
- fd_oscillation: mean |FD(k+1) - FD(k)| over the evaluations of the second half of training
  (after the initial descent): how much the curve jumps between neighbouring evaluations, what the
  paper's Fig. 3 shows without IDA;
- fd_late_std: the standard deviation of FD over those evaluations;
- fake_loss_cv: the loop's rolling std / mean of the fake-score loss (train/alarms.py), averaged over
  the second half.
An evaluation whose Fréchet distance failed (train/probe.py: singular covariances when the probe has
fewer images than feature dimensions) is left out of that run's curve and listed in `fd_missing`.
With several seeds the table gives mean ± standard deviation over seeds, and IDA's effect at each TTUR
is the paired difference without − with IDA over seeds (the same seed's runs share the data order
and initial noise): its mean, 95 % Student-t interval and paired t-test p. The paper's claim holds here
where, at every TTUR, the runs without IDA oscillate more than those with it: with one seed, by the
values (no interval); with several, only where the interval of that difference lies above 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from configs.cli import ArgumentParser, UserError, count, run_command
from configs.paths import writable_folder
from train.senseflow import main as senseflow_main

FD_KEYS = ("eval/fd_t_toyworld", "eval/fid_t")  # DESIGN.md along-training keys: toy, real family
STATS = ("fd_final", "fd_oscillation", "fd_late_std", "fake_loss_cv")
STAT_NAMES = {"fd_final": "FD final", "fd_oscillation": "FD oscillation", "fd_late_std": "FD late std",
              "fake_loss_cv": "fake-loss CV"}


def run_name(ttur: int, ida: bool, seed: int) -> str:
    return f"ttur{ttur}-ida_{'on' if ida else 'off'}-{seed}"


def curve_statistics(curve: list[tuple[int, float]], fake_cv: list[tuple[int, float]], last_step: int,
                     eval_every: int | None = None) -> dict:
    """The per-run numbers of the module docstring from the FD curve [(step, fd)] and the fake-score
    loss's rolling CV [(step, cv)] of a run of `last_step` iterations. With `eval_every`, a curve with
    evaluations missing (their FD failed) counts only jumps between neighbouring evaluations, and has
    no `fd_final` when the last evaluation is the missing one."""
    curve = sorted(curve)
    if len(curve) < 3:
        raise ValueError(f"need at least 3 evaluations along training, got {len(curve)}")
    late = [(step, fd) for step, fd in curve if step >= last_step / 2]
    if len(late) < 2:
        late = curve[-2:]
    jumps = [abs(b - a) for (s, a), (t, b) in zip(late, late[1:]) if eval_every is None or t - s == eval_every]
    cv_late = [cv for step, cv in fake_cv if step >= last_step / 2]
    final = curve[-1][1] if eval_every is None or curve[-1][0] == last_step else None
    return {"fd_final": final, "fd_oscillation": statistics.fmean(jumps) if jumps else None,
            "fd_late_std": statistics.stdev([fd for _, fd in late]),
            "fake_loss_cv": statistics.fmean(cv_late) if cv_late else None,
            "evaluations": len(curve), "late_evaluations": len(late)}


class SweepRunError(UserError, ValueError):
    """A run folder of the sweep that holds another schedule's curve."""


def read_run(folder: Path, eval_every: int) -> dict:
    """The FD curve and fake-loss CV of a finished run folder, as curve_statistics() takes them; the
    curve must have exactly this sweep's evaluations (0, eval_every, ..., steps)."""
    summary = json.loads((folder / "summary.json").read_text())
    steps = int(summary["steps"])
    points = summary.get("along_training") or []
    key = next((k for k in FD_KEYS if any(k in p for p in points)), None)
    if key is None:
        raise SweepRunError(f"{folder}: no FD-T along training ({' or '.join(FD_KEYS)}): the probe did not run, or "
                            "its Fréchet distance failed at every evaluation (fewer probe images than feature "
                            "dimensions?): raise train.eval_prompts and run the sweep with another --runs")
    evaluated = sorted(int(p["step"]) for p in points)
    expected = list(range(0, steps + 1, eval_every))
    if evaluated != expected:
        raise SweepRunError(f"{folder} holds a curve evaluated at {evaluated[:6]}..., not this sweep's "
                            f"{expected[:6]}... (another --evals?); nothing was changed. Move the folder aside or pass "
                            f"another --runs")
    curve = sorted((int(p["step"]), float(p[key])) for p in points if p.get(key) is not None)
    missing = sorted(set(evaluated) - {s for s, _ in curve})  # the probe's FD failed there (train/probe.py)
    if len(curve) < 3:
        raise SweepRunError(f"{folder}: only {len(curve)} of {len(expected)} evaluations have an FD-T (failed at "
                            f"{missing[:6]}...: the probe has fewer images than feature dimensions?); raise "
                            "train.eval_prompts above the feature dimension and run the sweep with another --runs")
    cv_file = folder / "dvclive" / "plots" / "metrics" / "fake_loss_cv.tsv"
    fake_cv = {}
    if cv_file.is_file():
        table = pd.read_csv(cv_file, sep="\t")
        for step, cv in zip(table.step.astype(int), table.fake_loss_cv.astype(float)):
            if step <= steps:
                fake_cv[step] = cv  # a resumed run logs repeated steps: the last one counts
    return {"fd_key": key, **curve_statistics(curve, sorted(fake_cv.items()), steps, eval_every),
            "curve": [[s, v] for s, v in curve], "fd_missing": missing}


def summarize(runs: dict[str, dict], tturs: list[int], seeds: list[int]) -> dict:
    """Per (ttur, ida): every statistic's mean and standard deviation over seeds, and the verdict."""
    table = {}
    for ttur in tturs:
        for ida in (True, False):
            got = [runs[run_name(ttur, ida, s)] for s in seeds]
            row = {}
            for stat in STATS:
                values = [g[stat] for g in got if g[stat] is not None]
                if values:
                    row[stat] = statistics.fmean(values)
                    row[f"{stat}_std"] = statistics.stdev(values) if len(values) > 1 else None
            table[f"ttur{ttur}-ida_{'on' if ida else 'off'}"] = row
    def oscillates_more(t: int) -> bool:  # a mean missing (no neighbouring FD points): not shown
        off, on = (table[f"ttur{t}-ida_{x}"].get("fd_oscillation") for x in ("off", "on"))
        return off is not None and on is not None and off > on

    more = {t: oscillates_more(t) for t in tturs}
    out = {"table": table, "without_ida_oscillates_more": more, "paper_claim_holds": all(more.values())}
    if len(seeds) > 1:
        effect = {t: {stat: ida_effect([runs[run_name(t, False, s)][stat] for s in seeds],
                                       [runs[run_name(t, True, s)][stat] for s in seeds]) for stat in STATS}
                  for t in tturs}
        established = {t: effect[t]["fd_oscillation"] is not None and effect[t]["fd_oscillation"]["p"] is not None
                       and effect[t]["fd_oscillation"]["lo"] > 0 for t in tturs}
        out.update(ida_effect=effect, without_ida_oscillates_more_established=established,
                   paper_claim_holds=all(established.values()))
    return out


def ida_effect(without: list, with_: list, level: float = 0.95) -> dict | None:
    """Paired difference without − with IDA over seeds: mean, Student-t interval, paired t-test p
    (None when a seed lacks the value; no interval when the differences do not vary)."""
    if any(v is None for v in [*without, *with_]):
        return None
    diff = np.asarray(without, np.float64) - np.asarray(with_, np.float64)
    mean = float(diff.mean())
    if np.ptp(diff) == 0:  # every seed the same difference (e.g. 0): a t-interval says nothing
        return {"mean": mean, "lo": None, "hi": None, "p": None, "seeds": len(diff)}
    test = stats.ttest_rel(without, with_)
    ci = test.confidence_interval(level)
    return {"mean": mean, "lo": float(ci.low), "hi": float(ci.high), "p": float(test.pvalue), "seeds": len(diff)}


def markdown(result: dict) -> str:
    t = result["table"]
    lines = ["# TTUR with and without IDA (paper Fig. 3 shape)", "",
             f"{result['generator_updates']} generator updates per run, the probe every "
             f"{result['generator_updates'] // result['evals']} generator updates; seeds {result['seeds']}; "
             f"FD = `{result['fd_key']}` of the probe (train/probe.py). Oscillation = mean |FD(k+1) - FD(k)| over "
             "the second half of training.", "",
             "| TTUR | IDA | " + " | ".join(STAT_NAMES[s] for s in STATS) + " |", "|---|---|" + "---|" * len(STATS)]

    def cell(row, stat):
        if row.get(stat) is None:
            return "—"
        sd = row.get(f"{stat}_std")
        return f"{row[stat]:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    for name, row in t.items():
        ttur, ida = name.removeprefix("ttur").split("-ida_")
        lines.append(f"| {ttur} | {ida} | " + " | ".join(cell(row, s) for s in STATS) + " |")
    missing = {name: run["fd_missing"] for name, run in result.get("runs", {}).items() if run.get("fd_missing")}
    if missing:
        lines += ["", "Evaluations without FD (the probe's Fréchet distance failed; left out of those curves): " +
                  "; ".join(f"{name} at {steps}" for name, steps in missing.items()) + "."]
    verdict = ", ".join(f"TTUR {k}: {'yes' if v else 'no'}" for k, v in result["without_ida_oscillates_more"].items())
    if "ida_effect" not in result:
        lines += ["", f"Without IDA the FD curve oscillates more than with it: {verdict}. "
                  f"The paper's claim {'holds' if result['paper_claim_holds'] else 'does not hold'} here "
                  "(one seed: no interval).", ""]
        return "\n".join(lines)
    lines += ["", "± is the standard deviation over seeds.", "",
              f"IDA's effect: paired difference without − with IDA over {len(result['seeds'])} seeds, mean "
              "[95 % Student-t interval], paired t-test p (positive: more without IDA).", "",
              "| TTUR | " + " | ".join(STAT_NAMES[s] for s in STATS) + " |", "|---|" + "---|" * len(STATS)]

    def effect_cell(e):
        if e is None:
            return "—"
        if e["p"] is None:
            return f"{e['mean']:+.3f} (the same on every seed: no interval)"
        return f"{e['mean']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}] p {e['p']:.2f}"

    for ttur, row in result["ida_effect"].items():
        lines.append(f"| {ttur} | " + " | ".join(effect_cell(row[s]) for s in STATS) + " |")
    established = ", ".join(f"TTUR {k}: {'yes' if v else 'no'}"
                            for k, v in result["without_ida_oscillates_more_established"].items())
    lines += ["", f"Without IDA the FD curve oscillates more than with it, by the means: {verdict}; with the "
              f"interval of the paired difference above 0: {established}. The paper's claim "
              f"{'holds' if result['paper_claim_holds'] else 'is not established'} here.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--ttur", type=count(1), nargs="+", default=[5, 10, 20])
    ap.add_argument("--generator-updates", type=count(2), default=60)
    ap.add_argument("--evals", type=count(2), default=12, help="probe evaluations per run (besides iteration 0)")
    ap.add_argument("--seeds", type=count(0), nargs="+", default=[0])
    ap.add_argument("--runs", default="runs/ttur")
    ap.add_argument("--out", default="results/ttur")
    ap.add_argument("--on-change", choices=("refuse", "supersede"), default="refuse",
                    help="a run folder of other settings: refuse (default) or move it aside and start over")
    args = ap.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds {' '.join(map(str, args.seeds))}: each seed once (a repeated seed is the same runs, "
                 "not another sample)")
    if args.generator_updates % args.evals:
        ap.error(f"--generator-updates ({args.generator_updates}) must be a multiple of --evals ({args.evals})")
    runs_root = writable_folder(args.runs, "the sweep's run folder", "--runs")
    out = writable_folder(args.out, "the sweep's results folder", "--out")
    runs = {}
    for seed in args.seeds:
        for ttur in args.ttur:
            for ida in (True, False):
                name = run_name(ttur, ida, seed)
                folder = runs_root / name
                steps = ttur * args.generator_updates
                eval_every = steps // args.evals
                print(f"ttur_sweep: {name} ({steps} iterations)")
                senseflow_main(["--params", args.params, "--variant", "full", "--out", str(folder),
                                "--on-change", args.on_change,
                                "-S", f"train.ttur={ttur}", "-S", f"train.ida={str(ida).lower()}",
                                "-S", f"train.seed={seed}", "-S", f"train.steps={steps}",
                                "-S", f"train.eval_every={eval_every}"])
                runs[name] = read_run(folder, eval_every)
    result = {"generator_updates": args.generator_updates, "evals": args.evals, "seeds": args.seeds,
              "fd_key": next(iter(runs.values()))["fd_key"], **summarize(runs, args.ttur, args.seeds), "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "sweep.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    run_command(main)
