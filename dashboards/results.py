"""What the dashboard shows, loaded from disk (no Streamlit here, so it is testable on its own).

Locations (environment variables, defaults relative to the working directory):
  SENSEFLOW_RESULTS  results/        summary.csv, ablation.md, samples/, geneval/, compbench/
  SENSEFLOW_RUNS     runs/distill/   one folder per run <variant>-<seed>: dvclive/plots/metrics/*.tsv,
                                     along_training.jsonl, summary.json (alarms)
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

from configs.params import EULER_SUFFIX, ParamsError, load_params
from protocols.provenance import short_models
from protocols.published import PREFIX, load_published
from dashboards.report import (ALONG_TRAINING, COMPBENCH, GENEVAL, LOWER_IS_BETTER, METRICS, SIGNIFICANT, TEACHER_RUNS,
                               ablation_markdown, ablation_rows, best_by_metric, clip_label, report_variants,
                               results_table, variant_label)

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
    """Teacher first, then params.yaml's variants (each followed by its Euler row), then any other
    variant found in the table."""
    try:
        names = report_variants(load_params(loc.params))
    except ParamsError:
        names = []
    extra = [] if table is None else [v for v in dict.fromkeys(table.variant)
                                      if v not in names and v not in TEACHER_RUNS]
    return [*TEACHER_RUNS, *names, *extra]


def load_table(loc: Locations) -> pd.DataFrame:
    """results/summary.csv (the report stage's output), or the same table built from the per-stage
    JSONs when the report has not run yet; empty when neither is available."""
    csv = loc.results / "summary.csv"
    if csv.is_file():
        try:
            table = pd.read_csv(csv, dtype={"seed": str, "revision": str})  # "0 1 2": the seeds behind a value
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


def seeds_column(table: pd.DataFrame, index) -> pd.Series:
    """The training seeds behind each variant's values ("0 1 2"; "—" for the teacher)."""
    if "seed" not in table:
        return pd.Series("—", index=index, name="seeds")
    seeds = table[table.value.notna()].groupby("variant").seed.first()
    return pd.Series([str(seeds.get(v)) if v not in TEACHER_RUNS and pd.notna(seeds.get(v)) else "—" for v in index],
                     index=index, name="seeds")


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
    wide = wide.reindex(index=rows, columns=metric_columns(table)).fillna("—")
    wide.insert(0, "seeds", seeds_column(table, wide.index))
    return wide


def best_cells(table: pd.DataFrame) -> dict[str, float]:
    """Best value per metric over the distilled variants (direction-aware; the teacher excluded)."""
    return best_by_metric(table, ablation_rows(table.variant.unique()))


def skipped(table: pd.DataFrame) -> pd.DataFrame:
    """(metric, variants, reason) for every metric without a value."""
    sub = table[table.value.isna() & ~table.variant.isin(TEACHER_RUNS)]
    if sub.empty:
        return pd.DataFrame(columns=["metric", "variants", "reason"])
    grouped = sub.groupby(["metric", "reason"], sort=False).variant.apply(lambda s: ", ".join(s)).reset_index()
    return grouped.rename(columns={"variant": "variants"})[["metric", "variants", "reason"]]


def ablation(loc: Locations, table: pd.DataFrame) -> str:
    """results/ablation.md (or the same built from the table) without its own title: the dashboard
    gives the section its heading."""
    md = loc.results / "ablation.md"
    text = md.read_text() if md.is_file() else \
        ablation_markdown(table, [v for v in variant_order(loc, table) if v not in TEACHER_RUNS])
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()


def split_run(name: str) -> tuple[str, int | None]:
    """(variant, seed) of a run folder name `<variant>-<seed>` (`<variant>-<seed>-euler`: the row
    `<variant>_euler`); (name, None) for any other name."""
    if name.endswith("-euler"):
        variant, seed = split_run(name.removesuffix("-euler"))
        return (f"{variant}{EULER_SUFFIX}", seed) if seed is not None else (name, None)
    variant, _, seed = name.rpartition("-")
    return (variant, int(seed)) if variant and seed.isdigit() else (name, None)


def run_label(name: str) -> str:
    """`full-0` -> `Ours (full) · seed 0`; other names as they are."""
    variant, seed = split_run(name)
    return label(variant) + (f" · seed {seed}" if seed is not None else "")


def run_alarms(loc: Locations) -> dict[str, list[dict]]:
    """run -> the collapse / oscillation alarms its distill run recorded (summary.json `alarms`)."""
    out = {}
    for path in sorted(loc.runs.glob("*/summary.json")) if loc.runs.is_dir() else []:
        try:
            alarms = json.loads(path.read_text()).get("alarms") or []
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if alarms:
            out[path.parent.name] = alarms
    return out


def _with_run(frame: pd.DataFrame) -> pd.DataFrame:
    parts = [split_run(r) for r in frame.run]
    frame.insert(1, "variant", [v for v, _ in parts])
    frame.insert(2, "seed", pd.array([s for _, s in parts], dtype="Int64"))
    return frame


def load_curves(loc: Locations) -> pd.DataFrame:
    """Long table (run, variant, seed, metric, step, value) of every dvclive curve under runs/."""
    frames = []
    if loc.runs.is_dir():
        for tsv in sorted(loc.runs.glob("*/dvclive/plots/metrics/*.tsv")):
            run, metric = tsv.parents[3].name, tsv.stem
            try:
                df = pd.read_csv(tsv, sep="\t")
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                continue
            if {"step", metric} <= set(df.columns):
                frames.append(pd.DataFrame({"run": run, "metric": metric, "step": df["step"], "value": df[metric]}))
    if not frames:
        return pd.DataFrame(columns=["run", "variant", "seed", "metric", "step", "value"])
    return _with_run(pd.concat(frames, ignore_index=True))


def load_along_training(loc: Locations) -> pd.DataFrame:
    """Long table (run, variant, seed, metric, step, value) of the metrics along training (DESIGN.md's
    eval/* keys): each run's along_training.jsonl, so curves show while a run is still training."""
    rows = []
    for path in sorted(loc.runs.glob("*/along_training.jsonl")) if loc.runs.is_dir() else []:
        for line in path.read_text().splitlines():
            try:
                point = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows += [{"run": path.parent.name, "metric": k, "step": int(point["step"]), "value": float(v)}
                     for k, v in point.items() if k in ALONG_TRAINING and isinstance(v, (int, float))]
    if not rows:
        return pd.DataFrame(columns=["run", "variant", "seed", "metric", "step", "value"])
    return _with_run(pd.DataFrame(rows))


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
    """run folder name -> image paths for one prompt: the teacher, then the runs by the variants'
    `order` and seed, then any other folder (those that have the prompt; moved-aside folders skipped)."""
    root = loc.results / "samples"
    rank = {v: i for i, v in enumerate(order)}
    names = [p.name for p in root.glob("*") if p.is_dir() and ".superseded" not in p.name]

    def key(name: str):
        variant, seed = split_run(name)
        return (rank.get(variant, rank.get(name, len(rank))), name if variant not in rank else "", seed or 0)

    out = {}
    for name in sorted(names, key=key):
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


def experiment_view(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The experiments table a researcher can read: name, revision and baseline; only the params that
    differ between the experiments; and the metric columns of `metric` (every run's value of it, named
    `<run folder> · <metric>`), or every metric column when `metric` is None."""
    if frame.empty:
        return frame
    fixed = [c for c in ("experiment", "rev", "baseline") if c in frame]
    params = [c for c in frame.columns if c.startswith("params:")
              and frame[c].astype(str).nunique(dropna=False) > 1]
    metrics = [c for c in frame.columns if c.startswith("metrics:") and (metric is None or c.endswith("." + metric))]
    view = frame[fixed + params + metrics].copy()

    def short(column: str) -> str:
        kind, _, rest = column.partition(":")
        if kind == "params":
            return rest.split(".yaml.", 1)[-1]
        path, _, key = rest.partition(".json.")
        parts = Path(path).parts
        return f"{parts[-2] if len(parts) >= 2 else path} · {key}"

    return view.rename(columns={c: short(c) for c in params + metrics})


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metric keys found in `dvc exp show`'s columns (for choosing what the experiments table shows)."""
    keys = {c.partition(".json.")[2] for c in frame.columns if c.startswith("metrics:") and ".json." in c}
    first = [m for m in ("fd_t_toyworld", "fid_t", "clip_score", "geneval_overall") if m in keys]
    return first + sorted(keys - set(first))


def protocol_warnings(table: pd.DataFrame) -> pd.DataFrame:
    """(metric, variants, not comparable because) of the user's values flagged by the metrics stage or
    the report (`protocol_warning`: e.g. FID-T over fewer than 2,048 images, a GenEval subset)."""
    if table.empty or "protocol_warning" not in table:
        return pd.DataFrame(columns=["metric", "variants", "not comparable because"])
    sub = table[table.value.notna() & table.protocol_warning.notna() & table.protocol_warning.astype(str).ne("")]
    grouped = sub.groupby(["metric", "protocol_warning"], sort=False).variant.apply(lambda s: ", ".join(s))
    return grouped.reset_index().rename(columns={"variant": "variants", "protocol_warning": "not comparable because"})[
        ["metric", "variants", "not comparable because"]]


def clip_scale(table: pd.DataFrame) -> str:
    """The scale the CLIP score column is on ("cosine", the paper's, or "100 x cosine", torchmetrics'); "unknown"
    for a summary.csv written before the scale was recorded (its values were 100 x cosine)."""
    if "source" not in table or not table[(table.metric == "clip_score") & table.source.notna()].shape[0]:
        return "unknown"
    return "100 x cosine" if clip_label(table).startswith("CLIP (100") else "cosine"


def provenance_table(loc: Locations) -> pd.DataFrame:
    """One row per run and stage of results/provenance.json: what its numbers rest on."""
    data = {}
    try:
        data = json.loads((loc.results / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError):
        return pd.DataFrame()
    rows = []
    for run, stages in (data or {}).items():
        for stage, rec in stages.items():
            student = rec.get("student") or rec.get("generator") or {}
            teacher = rec.get("teacher") or {}
            packages = rec.get("packages") or {}
            rows.append({
                "run": run, "stage": stage, "id": rec.get("id"),
                "N": json.dumps(rec.get("n_images")) if isinstance(rec.get("n_images"), dict) else rec.get("n_images"),
                "prompt set": f"{(rec.get('prompt_set') or {}).get('n')} prompts, sha256 "
                              f"{str((rec.get('prompt_set') or {}).get('sha256'))[:12]}",
                "sampling": f"{student.get('sampler')} {student.get('steps')} steps, CFG {student.get('guidance_scale')}",
                "teacher reference": (f"{teacher.get('sampler')} {teacher.get('steps')} steps, CFG "
                                      f"{teacher.get('guidance_scale')}" if teacher else "—"),
                "detector / judge": rec.get("detector") or rec.get("judge") or "; ".join(
                    f"{k}: {v}" for k, v in (rec.get("features") or {}).items()),
                "protocol": rec.get("protocol"), "subset": json.dumps(rec.get("subset") or {}),
                "models (sha256)": "; ".join(f"{k}: {v}" for k, v in short_models(rec.get("models") or {}).items()),
                "packages": ", ".join(f"{k} {packages[k]}" for k in ("torch", "diffusers", "transformers", "clean-fid")
                                      if k in packages)})
    return pd.DataFrame(rows)


def split_published(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the user's rows, the paper's rows `published:<method>`) of summary.csv: the variant tables, bests
    and charts read only the first; the published section sets the second beside it."""
    if table.empty or "variant" not in table:
        return table, table.iloc[0:0]
    paper = table.variant.astype(str).str.startswith(PREFIX)
    return table[~paper].reset_index(drop=True), table[paper].reset_index(drop=True)


def published_view(ours: pd.DataFrame, published: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Metric x method: the user's variants (teacher first) then the paper's methods of the same family,
    for the metrics both report, and per metric the protocol warnings of the user's values (N, subset,
    detector) under `not comparable because`."""
    if published.empty:
        return pd.DataFrame()
    mine = ours[ours.value.notna() & ours.metric.isin(set(published.metric))]
    metrics = [m for m in metric_columns(published) if m in set(mine.metric)] or metric_columns(published)
    columns = [v for v in order if v in set(mine.variant)] + list(dict.fromkeys(published.variant))
    both = pd.concat([mine, published], ignore_index=True)
    wide = both.pivot_table(index="metric", columns="variant", values="value", aggfunc="first")
    wide = wide.reindex(index=metrics, columns=columns)
    wide.columns = [label(v) if not v.startswith(PREFIX) else v.removeprefix(PREFIX) + " (paper)" for v in columns]
    warnings = mine.get("protocol_warning", pd.Series(dtype=object)).fillna("")
    notes = mine.assign(w=warnings).groupby("metric").w.agg(lambda s: "; ".join(dict.fromkeys(x for x in s if x)))
    wide["not comparable because"] = [notes.get(m, "") for m in metrics]
    return wide


def paper_tables() -> pd.DataFrame:
    """Every published cell (protocols/published_senseflow_iclr2026.csv), for families without a user run."""
    return load_published()


def label(variant: str) -> str:
    return variant_label(variant)


__all__ = ["TEACHER_RUNS", "seeds_column", "metric_names", "split_run", "run_label", "load_along_training", "experiment_view", "CURVES", "LOWER_IS_BETTER", "Locations", "ablation", "best_cells", "compbench_frame", "dvc_experiments",
           "geneval_frame", "label", "load_curves", "load_table", "sample_images", "sample_prompts", "skipped",
           "variant_order", "wide_table", "split_published", "published_view", "paper_tables",
           "protocol_warnings", "clip_scale", "provenance_table"]
