"""Wall-clock budget of the whole pipeline, measured on a fresh clone.

    python -m evaluate.bench_pipeline [--repo .] [--workdir DIR] [-S key=value ...]
                                      [--out results/bench/pipeline.json]

Clones the repository's committed state (HEAD) into a new folder (no data/, no runs/, no DVC
cache: what a new user has), runs `dvc repro` there and times it stage by stage, then runs
`dvc repro` again with nothing changed and times that. Budgets (issue: one-command experiments):
the full default pipeline ≤ 30 minutes on the 2-core CPU machine (the committed toy teacher and
encoders are reused, as on any fresh clone), the no-op rerun ≤ 10 s. `-S section.key=value`
edits the clone's params.yaml first (values parsed as YAML; the tiny end-to-end test uses it);
the result then records those overrides and is not the default pipeline's budget.

Reproduction: without overrides, the fresh clone's results/summary.csv is compared value by value
(variant, metric, seed) with the one committed at HEAD: `reproduction` in the result records how many
values were compared, the largest absolute and relative differences and the rows that differ (a
committed result that a fresh clone does not give back is a defect, or machine-to-machine spread
to report beside the seed spread).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from configs.cli import ArgumentParser, run_command
from configs.paths import writable_file

BUDGET_FULL_S = 30 * 60
BUDGET_NOOP_S = 10.0
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def apply_overrides(params_file: Path, overrides: list[str]) -> dict:
    """Set dotted keys in a params.yaml (`train.steps=2`); returns the overrides as a dict."""
    data = yaml.safe_load(params_file.read_text()) or {}
    applied = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"-S expects section.key=value, got {item!r}")
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"-S {item!r}: params.yaml has no section {part!r} on that path")
            node = node[part]
        node[parts[-1]] = applied[key] = yaml.safe_load(raw)
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return applied


def timed_repro(repo: Path, log_path: Path, args: list[str] = ()) -> tuple[float, dict[str, float], int]:
    """Run `dvc repro` in `repo`, streaming its output to `log_path` and stdout; returns total
    seconds, seconds per stage (from its 'Running stage' lines) and the exit code."""
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    current, since = None, t0
    with open(log_path, "a") as log:
        proc = subprocess.Popen(["dvc", "repro", *args], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            log.write(line)
            m = STAGE_LINE.search(line)
            if m:
                now = time.perf_counter()
                if current:
                    stages[current] = now - since
                current, since = m.group(1), now
                print(f"[{now - t0:7.1f} s] {m.group(1)}", flush=True)
        code = proc.wait()
    end = time.perf_counter()
    if current:
        stages[current] = end - since
    return end - t0, stages, code


def compare_results(committed: Path, fresh: Path) -> dict:
    """Value-by-value comparison of two summary.csv files on (variant, metric, seed)."""
    if not committed.is_file():
        return {"compared": 0, "note": "no committed results/summary.csv to compare with"}
    key = ["variant", "metric", "seed"]
    a = pd.read_csv(committed, dtype={"seed": str})[key + ["value"]]
    b = pd.read_csv(fresh, dtype={"seed": str})[key + ["value"]]
    both = a.merge(b, on=key, how="outer", suffixes=("_committed", "_fresh"), indicator=True)
    only = both[both["_merge"] != "both"]
    matched = both[both["_merge"] == "both"]
    lost = matched[matched.value_committed.isna() != matched.value_fresh.isna()]  # a value on one side only
    pair = matched[matched.value_committed.notna() & matched.value_fresh.notna()]
    diff = (pair.value_fresh - pair.value_committed).abs()
    rel = diff / pair.value_committed.abs().clip(lower=1e-12)
    differing = pair[diff > 1e-9 * (1 + pair.value_committed.abs())]
    differing = pd.concat([differing, lost])
    return {"compared": int(len(pair)), "identical": bool(differing.empty and only.empty),
            "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
            "max_rel_diff": float(rel.max()) if len(rel) else 0.0,
            "differing": [f"{r.variant}/{r.metric}/seed {r.seed}: {r.value_committed:.6g} -> {r.value_fresh:.6g}"
                          for r in differing.itertuples()][:20],
            "rows_in_one_only": int(len(only))}


def git_head(repo: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".", help="repository to clone (its HEAD commit)")
    ap.add_argument("--workdir", default=None, help="where to clone (default: a new temp folder, removed after)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="results/bench/pipeline.json")
    ap.add_argument("--keep", action="store_true", help="keep the clone (default: removed unless --workdir)")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    repo = Path(args.repo).resolve()
    if not (repo / "dvc.yaml").is_file():
        raise SystemExit(f"{repo} has no dvc.yaml (run from the repository root or pass --repo)")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="senseflow_pipeline_"))
    clone = work / "clone"
    if clone.exists():
        raise SystemExit(f"{clone} exists; pass an empty --workdir")
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(clone)], check=True)
    applied = apply_overrides(clone / "params.yaml", args.overrides) if args.overrides else {}
    log = work / "repro.log"
    print(f"fresh clone of {git_head(repo)} in {clone}; log: {log}", flush=True)
    committed = work / "committed_summary.csv"
    if (clone / "results" / "summary.csv").is_file():
        shutil.copyfile(clone / "results" / "summary.csv", committed)
    full_s, stages, code = timed_repro(clone, log)
    if code != 0:
        raise SystemExit(f"dvc repro failed (exit {code}); see {log}")
    noop_s, _, code = timed_repro(clone, log)
    if code != 0:
        raise SystemExit(f"second dvc repro failed (exit {code}); see {log}")
    result = {
        "full_repro_s": full_s, "noop_repro_s": noop_s,
        "budget_full_s": BUDGET_FULL_S, "budget_noop_s": BUDGET_NOOP_S,
        "within_budget": {"full": full_s <= BUDGET_FULL_S, "noop": noop_s <= BUDGET_NOOP_S},
        "stages_s": stages, "overrides": applied, "commit": git_head(repo), "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "reproduction": None if applied else compare_results(committed, clone / "results" / "summary.csv"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"full dvc repro {full_s / 60:.1f} min (budget {BUDGET_FULL_S / 60:.0f}); "
          f"no-op rerun {noop_s:.1f} s (budget {BUDGET_NOOP_S:.0f})")
    if result["reproduction"]:
        r = result["reproduction"]
        print(f"committed results reproduced: {r.get('identical')} ({r['compared']} values, max abs diff "
              f"{r.get('max_abs_diff', 0):.3g})")
    if args.workdir is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["clone"] = str(clone)
    return result


if __name__ == "__main__":
    run_command(main)
