"""What the dashboard shows, loaded from disk (no Streamlit here, so it is testable on its own).

Locations (environment variables, defaults relative to the working directory):
  SENSEFLOW_RESULTS  results/        summary.csv, ablation.md, samples/, geneval/, compbench/
  SENSEFLOW_RUNS     runs/distill/   one dvclive folder per variant: <v>/dvclive/plots/metrics/*.tsv
  SENSEFLOW_PARAMS   params.yaml     variant names; used to build the table when summary.csv is absent
  SENSEFLOW_DVC_REPO .               where `dvc exp show` runs
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from configs.params import ParamsError, load_params
from dashboards.report import (COMPBENCH, GENEVAL, LOWER_IS_BETTER, METRICS, SIGNIFICANT, VARIANT_LABELS,
                               ablation_markdown, best_by_metric, results_table)

CURVES = ["loss_dmd", "loss_fake_score", "fake_score_loss_std", "loss_isg", "loss_adv", "loss_d_real",
          "loss_d_fake", "grad_norm_generator", "grad_norm_fake_score", "grad_norm_discriminator", "s_per_iter"]


@dataclass
class Locations:
    results: Path
    runs: Path
    params: Path
    repo: Path = Path(".")

    @classmethod
    def from_env(cls) -> "Locations":
        return cls(Path(os.environ.get("SENSEFLOW_RESULTS", "results")),
                   Path(os.environ.get("SENSEFLOW_RUNS", "runs/distill")),
                   Path(os.environ.get("SENSEFLOW_PARAMS", "params.yaml")),
                   Path(os.environ.get("SENSEFLOW_DVC_REPO", ".")))


def variant_order(loc: Locations, table: pd.DataFrame | None = None) -> list[str]:
    """Teacher first, then params.yaml's variants, then any other variant found in the table."""
    try:
        names = list(load_params(loc.params).get("variants") or {})
    except ParamsError:
        names = []
    extra = [] if table is None else [v for v in dict.fromkeys(table.variant) if v not in names and v != "teacher"]
    return ["teacher"] + names + extra


def load_table(loc: Locations) -> pd.DataFrame:
    """results/summary.csv (the report stage's output), or the same table built from the per-stage
    JSONs when the report has not run yet; empty when neither is available."""
    csv = loc.results / "summary.csv"
    if csv.is_file():
        try:
            table = pd.read_csv(csv)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            table = pd.DataFrame()
        if {"variant", "metric", "value"} <= set(table.columns):
            table["reason"] = table.get("reason", pd.Series(dtype=str)).fillna("")
            return table
    try:
        params = load_params(loc.params)
    except ParamsError:
        return pd.DataFrame(columns=["variant", "family", "metric", "value", "n_images", "reason"])
    table = results_table(params, loc.results, revision="working tree")
    return table if table.value.notna().any() else table.iloc[0:0]


def metric_columns(table: pd.DataFrame, keep_empty: bool = False) -> list[str]:
    """Metrics in reading order: distillation metrics (DESIGN names) first, then GenEval, then
    T2I-CompBench, then anything else; metrics without a single value left out unless keep_empty
    (they are listed with their reasons under the table)."""
    present = list(dict.fromkeys(table.metric))
    order = [m for m in METRICS + GENEVAL + COMPBENCH if m in present] + \
        [m for m in present if m not in METRICS + GENEVAL + COMPBENCH]
    if keep_empty:
        return order
    ran = set(table[table.value.notna()].metric)
    return [m for m in order if m in ran]


def wide_table(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """variant x metric values, distillation metrics first, metrics that never ran collapsed."""
    if table.empty:
        return pd.DataFrame()
    wide = table.pivot_table(index="variant", columns="metric", values="value", aggfunc="first", dropna=False)
    rows = [v for v in order if v in wide.index] + [v for v in wide.index if v not in order]
    return wide.reindex(index=rows, columns=metric_columns(table))


def interval_table(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """variant x metric as text: value ± half its 95 % interval, * where it differs from `full` with
    p < 0.05 (the report's columns ci_low / ci_high / p_vs_full); empty when no interval was computed."""
    if table.empty or "ci_low" not in table or not table.ci_low.notna().any():
        return pd.DataFrame()

    def cell(r) -> str:
        if pd.isna(r.value):
            return "—"
        text = f"{r.value:.4g}"
        if pd.notna(r.ci_low) and pd.notna(r.ci_high):
            text += f" ± {(r.ci_high - r.ci_low) / 2:.2g}"
        if pd.notna(r.get("p_vs_full")) and r.p_vs_full < SIGNIFICANT:
            text += " *"
        return text

    shown = table.assign(text=table.apply(cell, axis=1))
    wide = shown.pivot_table(index="variant", columns="metric", values="text", aggfunc="first")
    rows = [v for v in order if v in wide.index] + [v for v in wide.index if v not in order]
    return wide.reindex(index=rows, columns=metric_columns(table)).fillna("—")


def best_cells(table: pd.DataFrame) -> dict[str, float]:
    """Best value per metric over the distilled variants (direction-aware; the teacher excluded)."""
    return best_by_metric(table, [v for v in table.variant.unique() if v != "teacher"])


def skipped(table: pd.DataFrame) -> pd.DataFrame:
    """(metric, variants, reason) for every metric without a value."""
    sub = table[table.value.isna() & table.variant.ne("teacher")]
    if sub.empty:
        return pd.DataFrame(columns=["metric", "variants", "reason"])
    grouped = sub.groupby(["metric", "reason"], sort=False).variant.apply(lambda s: ", ".join(s)).reset_index()
    return grouped.rename(columns={"variant": "variants"})[["metric", "variants", "reason"]]


def ablation(loc: Locations, table: pd.DataFrame) -> str:
    """results/ablation.md (or the same built from the table) without its own title: the dashboard
    gives the section its heading."""
    md = loc.results / "ablation.md"
    text = md.read_text() if md.is_file() else \
        ablation_markdown(table, [v for v in variant_order(loc, table) if v != "teacher"])
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()


def run_alarms(loc: Locations) -> dict[str, list[dict]]:
    """variant -> the collapse / oscillation alarms its distill run recorded (summary.json `alarms`)."""
    out = {}
    for path in sorted(loc.runs.glob("*/summary.json")) if loc.runs.is_dir() else []:
        try:
            alarms = json.loads(path.read_text()).get("alarms") or []
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if alarms:
            out[path.parent.name] = alarms
    return out


def load_curves(loc: Locations) -> pd.DataFrame:
    """Long table (variant, metric, step, value) of every dvclive curve under runs/."""
    frames = []
    if loc.runs.is_dir():
        for tsv in sorted(loc.runs.glob("*/dvclive/plots/metrics/*.tsv")):
            variant, metric = tsv.parents[3].name, tsv.stem
            try:
                df = pd.read_csv(tsv, sep="\t")
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                continue
            if {"step", metric} <= set(df.columns):
                frames.append(pd.DataFrame({"variant": variant, "metric": metric, "step": df["step"],
                                            "value": df[metric]}))
    if not frames:
        return pd.DataFrame(columns=["variant", "metric", "step", "value"])
    return pd.concat(frames, ignore_index=True)


def sample_prompts(loc: Locations) -> dict[int, str]:
    """prompt_index -> prompt of the generated sample sets (from the first samples.jsonl found)."""
    root = loc.results / "samples"
    for name in ["teacher"] + sorted(p.name for p in root.glob("*") if p.is_dir()):
        jsonl = root / name / "samples.jsonl"
        if jsonl.is_file():
            out = {}
            for line in jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                    out.setdefault(int(row["prompt_index"]), str(row["prompt"]))
                except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                    continue
            if out:
                return dict(sorted(out.items()))
    return {}


def sample_images(loc: Locations, prompt_index: int, order: list[str]) -> dict[str, list[Path]]:
    """name -> image paths for one prompt, teacher and variants in `order` (those that have it)."""
    root = loc.results / "samples"
    out = {}
    for name in order + sorted(p.name for p in root.glob("*") if p.is_dir() and p.name not in order):
        pngs = sorted((root / name / str(prompt_index)).glob("*.png"), key=lambda p: (len(p.stem), p.stem))
        if pngs:
            out[name] = pngs
    return out


def benchmark_frame(table: pd.DataFrame, names: list[str], prefix: str) -> pd.DataFrame:
    """Long (variant, category, value, ci_low, ci_high) for one benchmark's per-category scores."""
    sub = table[table.metric.isin(names) & table.value.notna() & table.metric.ne("geneval_overall")]
    frame = pd.DataFrame({"variant": sub.variant, "category": sub.metric.str.removeprefix(prefix), "value": sub.value})
    for col in ("ci_low", "ci_high"):
        frame[col] = sub[col] if col in sub else float("nan")
    return frame.reset_index(drop=True)


def geneval_frame(table: pd.DataFrame) -> pd.DataFrame:
    return benchmark_frame(table, GENEVAL, "geneval_")


def compbench_frame(table: pd.DataFrame) -> pd.DataFrame:
    return benchmark_frame(table, COMPBENCH, "compbench_")


def dvc_experiments(repo: Path = Path(".")) -> tuple[pd.DataFrame, str]:
    """Experiments as `dvc exp show --json` lists them (one row per experiment: name, rev and every
    metric/param), plus a message when there is nothing to show or DVC cannot answer."""
    try:
        proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return pd.DataFrame(), f"`dvc exp show` could not run: {e}"
    if proc.returncode != 0:
        return pd.DataFrame(), f"`dvc exp show` failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    try:
        data = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return pd.DataFrame(), "`dvc exp show --json` returned no JSON"
    rows = []

    def flatten(prefix: str, obj, row: dict) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v, row)
        elif isinstance(obj, (int, float, str, bool)) or obj is None:
            row[prefix] = obj

    def visit(entry: dict, parent: str | None) -> None:
        row = {"experiment": entry.get("name") or (entry.get("rev") or "")[:7], "rev": (entry.get("rev") or "")[:7],
               "baseline": parent or ""}
        for kind in ("metrics", "params"):
            for file, content in ((entry.get("data") or {}).get(kind) or {}).items():
                flatten(f"{kind}:{file}", (content or {}).get("data"), row)
        rows.append(row)
        for exp in entry.get("experiments") or []:
            for revision in exp.get("revs") or []:
                visit(revision, row["experiment"])

    for entry in data if isinstance(data, list) else []:
        visit(entry, None)
    frame = pd.DataFrame(rows)
    if len(frame) <= 1:
        return frame, "No DVC experiments yet: queue some with `dvc exp run --queue -S train.ttur=10` and `dvc queue start`."
    return frame, ""


def label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


__all__ = ["CURVES", "LOWER_IS_BETTER", "Locations", "ablation", "best_cells", "compbench_frame", "dvc_experiments",
           "geneval_frame", "label", "load_curves", "load_table", "sample_images", "sample_prompts", "skipped",
           "variant_order", "wide_table"]
