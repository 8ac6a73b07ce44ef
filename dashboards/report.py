"""`report` stage: one tidy results table, the paper-style ablation table and the benchmark tables.

    python -m dashboards.report [--params params.yaml] [--results results] [--out results]

Reads, for the teacher, the teacher at the student's step count (`teacher_few`, GenEval only), every
run <v>-<seed> of params.yaml `variants` x `seeds` and, as rows `<v>_euler`, the `<v>-<seed>-euler`
folders of `eval.euler_variants` (the same students with the Euler sampler, the paper's "(Euler)"):
  results/metrics/<run>/metrics.json (+ metrics.meta.json: skipped reasons, image counts)
  results/geneval/<run>/summary.json     {"geneval_overall": x, "geneval_<task>": x}
  results/compbench/<run>/summary.json   {"compbench_<category>": x}
  results/training/<run>/summary.json    the distill run's summary: metrics along training, alarms
and writes
  results/summary.csv    long format: variant,family,metric,value,n_images,reason,seed,revision,
                         ci_low,ci_high,n_seeds,p_vs_full,fd_bias,seed_std (one row per variant x
                         metric, the value the mean over the training seeds, `seed` the seeds it
                         averages; empty value + reason when a metric did not run)
  results/summary_by_seed.csv  the same columns, one row per variant x seed x metric
  results/provenance.json      per run and stage, what its numbers were computed from (N, prompt-set hash,
                         samplers and guidance, model sha256, packages, detectors); `provenance` in
                         summary.csv is the record's id
  results/ablation.md    the paper's Tab. 2 shape (variants x FID-T, HPSv2, Pick, IR, AESv2, ...), the published
                         rows of the family, and the TTUR sweep (results/ttur/sweep.md) where it has run
  results/benchmarks.md  GenEval per task and T2I-CompBench per category, variants x columns, and each
                         student run's GenEval against the teacher and against the teacher at the student's
                         step count (paired differences with 95 % bootstrap intervals: the gap distillation closes)
  results/along_training.csv / .md  the metrics along training (variant, seed, step, metric, value);
                         the markdown in the paper's Tab. 8 shape (a metric per variant at each
                         evaluated iteration)
A source that is missing for a run gives its rows with reason "not run" (never a crash). The
teacher is the FID-T reference, so it (and teacher_few) only has benchmark rows.

Uncertainty (evaluate/intervals.py). One seed: `ci_low`/`ci_high` is the 95 % bootstrap interval
over prompts (`eval.bootstrap` replicates; the metrics stage's own for its metrics, GenEval stratified
by task, T2I-CompBench per category) and `p_vs_full` the paired bootstrap p-value of the difference
from `full` on the same prompts and seeds. Two or more seeds: the value is the mean over seeds,
`ci_low`/`ci_high` its Student-t 95 % interval across seeds, `seed_std` the seeds' standard
deviation, and `p_vs_full` a paired t-test over the seeds both variants ran (the per-seed rows keep
their bootstrap intervals). `n_seeds` the training seeds behind the value; `fd_bias` the bootstrap
estimate of a Fréchet distance's small-N bias. The tables mark a difference from `full` with *
where p < 0.05; the others are within noise.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from configs.cli import ArgumentParser, run_command
from configs.params import EULER_SUFFIX, euler_runs, load_params, pipeline_runs
from configs.paths import readable_folder, writable_folder
from configs.schema import SCHEMA
from evaluate.intervals import MetricSample, load_samples, paired_comparison, paired_difference, seed_interval
from protocols.paper_protocol import subset_label
from protocols.published import PREFIX, paper_family, protocol_warning, published_rows

# DESIGN.md metric names of the metrics stage, in table order
METRICS = ["fid_t", "patch_fid_t", "kid_t", "fid", "fd_t_toyworld", "fd_t_dinov2", "clip_score", "hpsv2", "pickscore",
           "imagereward", "aesv2", "lpips_diversity", "clip_diversity"]
GENEVAL_TASKS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
GENEVAL = ["geneval_overall"] + [f"geneval_{t}" for t in GENEVAL_TASKS]
COMPBENCH_CATEGORIES = ["color", "shape", "texture", "spatial", "non_spatial", "complex"]
COMPBENCH = [f"compbench_{c}" for c in COMPBENCH_CATEGORIES]
LOWER_IS_BETTER = {"fid_t", "patch_fid_t", "kid_t", "fid", "fd_t_toyworld", "fd_t_dinov2"}
COLUMNS = ["variant", "family", "metric", "value", "n_images", "reason", "seed", "revision", "ci_low", "ci_high",
           "n_seeds", "p_vs_full", "fd_bias", "seed_std", "protocol_warning", "source", "provenance"]
ALONG_TRAINING = ["eval/fd_t_toyworld", "eval/fid_t", "eval/clip_score", "eval/oracle_accuracy"]  # DESIGN.md keys
SIGNIFICANT = 0.05  # p_vs_full below this: marked * in the tables
# the teacher's benchmark runs (no training seed, benchmark rows only): its own sampler, and Euler at the
# student's step count (geneval_teacher_few: the gap distillation closes, graded on the same prompts)
TEACHER_RUNS = ("teacher", "teacher_few")

# paper-style labels (Tab. 2 rows); other variant names are shown as they are
VARIANT_LABELS = {"teacher": "Teacher", "teacher_few": "Teacher (few-step Euler)", "full": "Ours (full)",
                  "full_euler": "Ours (full, Euler)",
                  "wo_isg": "w/o ISG", "wo_ida": "w/o IDA", "wo_both": "w/o ISG, w/o IDA", "wo_vfm": "w/o VFM (DMD2-like)"}
ABLATION_COLUMNS = [("fid_t", "FID-T"), ("patch_fid_t", "Patch FID-T"), ("clip_score", "CLIP"), ("hpsv2", "HPSv2"),
                    ("pickscore", "Pick"), ("imagereward", "IR"), ("aesv2", "AESv2"),
                    ("geneval_overall", "GenEval"), ("lpips_diversity", "LPIPS-div"),
                    ("clip_diversity", "CLIP-div")]


EULER = EULER_SUFFIX  # row variant of a student scored with the Euler sampler (configs.params.euler_runs)


def comparison_variant(variant: str) -> str:
    """The row a variant's p_vs_full pairs with: `full` of the same seed, and for an Euler row of another
    variant `full_euler` (the same sampler: the comparison stays an ablation; `full_euler` against `full`
    is the sampler's own effect on the same weights)."""
    return f"full{EULER}" if variant.endswith(EULER) and variant != f"full{EULER}" else "full"


def ablation_rows(variants) -> list[str]:
    """The rows that compete for the best value of a column: distilled variants, not the teacher's runs and
    not the Euler-sampled rows (another sampler, not another ablation)."""
    return [v for v in variants if v not in TEACHER_RUNS and not v.endswith(EULER)]


def variant_label(variant: str) -> str:
    """The paper-style name of a row (`wo_isg_euler` -> `w/o ISG (Euler)`)."""
    if variant in VARIANT_LABELS:
        return VARIANT_LABELS[variant]
    if variant.endswith(EULER):
        return f"{variant_label(variant.removesuffix(EULER))} (Euler)"
    return variant


def report_variants(params: dict) -> list[str]:
    """params `variants` in order, each followed by its Euler row where `eval.euler_variants` has it."""
    euler = {v for v, _, _ in euler_runs(params)}
    return [x for v in (params.get("variants") or {}) for x in (v, f"{v}{EULER}") if x == v or x in euler]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def metric_rows(results: Path, variant: str) -> list[dict]:
    """Rows of the metrics stage for one variant (every DESIGN.md metric, skipped ones with reason)."""
    values = _read_json(results / "metrics" / variant / "metrics.json")
    if values is None:
        return [{"metric": m, "value": None, "n_images": None, "reason": "not run"} for m in METRICS]
    meta = _read_json(results / "metrics" / variant / "metrics.meta.json") or {}
    skipped, counts = meta.get("skipped") or {}, meta.get("n_images") or {}
    counts = counts if isinstance(counts, dict) else {m: counts for m in values}
    flags = values.get("flags") if isinstance(values.get("flags"), dict) else {}
    described = meta.get("features") if isinstance(meta.get("features"), dict) else {}
    rows = []
    for m in METRICS + sorted(k for k in set(values) - set(METRICS) if not isinstance(values[k], (dict, list))):
        v = _number(values.get(m))
        reason = "" if v is not None else str(skipped.get(m) or ("not computed" if m in values else "not run"))
        rows.append({"metric": m, "value": v, "n_images": counts.get(m), "reason": reason,
                     "protocol_warning": flags.get(m) or None,
                     "source": described.get(m) if v is not None else None,
                     "provenance": (meta.get("provenance") or {}).get("id") if v is not None else None})
    return rows


def summary_rows(path: Path, names: list[str]) -> list[dict]:
    """Rows of a benchmark summary.json (GenEval / CompBench)."""
    data = _read_json(path)
    if data is None:
        return [{"metric": m, "value": None, "n_images": None, "reason": "not run"} for m in names]
    n = data.get("n_images")
    rows = []
    for m in names + sorted(k for k in data if k not in names and k.startswith(names[0].split("_")[0] + "_")):
        v = _number(data.get(m))
        rows.append({"metric": m, "value": v, "n_images": n, "reason": "" if v is not None else "not computed",
                     "provenance": data.get("provenance_id") if v is not None else None})
    return rows


def prompt_samples(results: Path, variant: str) -> dict[str, MetricSample]:
    """What each of a variant's values is computed from, per prompt (for intervals and paired
    comparisons): the metrics stage's per_prompt.npz, GenEval's results.jsonl (prompt = image folder,
    value = the prompt's share of correct images, stratified by task), T2I-CompBench's per_prompt.csv."""
    out: dict[str, MetricSample] = {}
    path = results / "geneval" / variant / "results.jsonl"
    if path.is_file():
        df = pd.read_json(path, orient="records", lines=True)
        df["prompt"] = df["filename"].map(lambda f: Path(f).parent.parent.name)
        per = df.groupby("prompt", sort=True).agg(tag=("tag", "first"), correct=("correct", "mean")).reset_index()
        out["geneval_overall"] = MetricSample("mean", per.correct.to_numpy(float), per.prompt.to_numpy(str),
                                              strata=per.tag.to_numpy(str))
        for tag, g in per.groupby("tag", sort=False):
            out[f"geneval_{tag}"] = MetricSample("mean", g.correct.to_numpy(float), g.prompt.to_numpy(str))
    path = results / "compbench" / variant / "per_prompt.csv"
    if path.is_file():
        df = pd.read_csv(path)
        for category, g in df.groupby("category", sort=False):
            out[f"compbench_{category}"] = MetricSample("mean", g.score.to_numpy(float), g.prompt.to_numpy(str))
    path = results / "metrics" / variant / "per_prompt.npz"
    if path.is_file():
        out.update(load_samples(path))
    return out


def add_uncertainty(table: pd.DataFrame, results: Path, draws: int, seed: int) -> pd.DataFrame:
    """Fill ci_low / ci_high / n_seeds / p_vs_full of a one-seed-per-row table (module docstring) for the
    rows with a value: `run` names each row's folder; the comparison is `comparison_variant`'s run of the same seed."""
    samples = {r: prompt_samples(results, r) for r in dict.fromkeys(table.run)}
    metas = {r: _read_json(results / "metrics" / r / "metrics.meta.json") or {} for r in samples}
    runs = {(row.variant, row.seed): row.run for row in table.itertuples()}
    for i, row in table.iterrows():
        sample = samples[row.run].get(row.metric)
        if row.value is None or pd.isna(row.value) or sample is None:
            continue
        table.at[i, "n_seeds"] = 1
        if not draws:
            continue
        lo_hi = (metas[row.run].get("intervals") or {}).get(row.metric)
        bias = (metas[row.run].get("fd_bias") or {}).get(row.metric)
        if lo_hi is None:
            boot = sample.bootstrap(draws, seed)
            lo_hi, bias = boot["ci"], boot["bias"]
        table.at[i, "ci_low"], table.at[i, "ci_high"] = float(lo_hi[0]), float(lo_hi[1])
        if bias is not None:
            table.at[i, "fd_bias"] = float(bias)
        other = comparison_variant(row.variant)
        full = samples.get(runs.get((other, row.seed)), {})
        if row.variant not in (other, "full", *TEACHER_RUNS) and row.metric in full:
            try:
                table.at[i, "p_vs_full"] = paired_comparison(sample, full[row.metric], draws, seed)
            except ValueError:  # not the same prompts (e.g. other eval params): no paired comparison
                pass
    return table


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_rows(results: Path, run: str, teacher: bool = False) -> list[dict]:
    """Every metric row of one run folder name (the teacher: benchmark rows only, where they ran)."""
    parts = [] if teacher else metric_rows(results, run)
    for name, names in (("geneval", GENEVAL), ("compbench", COMPBENCH)):
        got = summary_rows(results / name / run / "summary.json", names)
        if teacher and all(r["reason"] == "not run" for r in got):
            continue
        parts += got
    return parts


def family_name(params: dict) -> str:
    """The `family` column: the train preset (sd35_large, flux, sdxl, toy, ...; it names the model, where
    train.family names only its class, sd3 for both SD 3.5 sizes), else train.family."""
    train = params.get("train") or {}
    return str(train.get("preset") or train.get("family") or "unknown")


def protocol_notes(results: Path, run: str) -> dict[str, tuple[str, str]]:
    """Per benchmark ("geneval", "compbench", "metrics") of one run: (subset, tool) where they differ from
    the paper's protocol (a smaller prompt set or fewer images per prompt; a detector, judge or feature
    extractor other than the official one), for `protocol_warning`."""
    notes = {}
    ge = _read_json(results / "geneval" / run / "summary.json") or {}
    if ge:
        official = ge.get("edition") == "official"
        subset = subset_label(ge.get("subset") or {}) or (
            f"subset: {ge['n_prompts']} of 553 prompts" if official and int(ge.get("n_prompts") or 553) < 553 else "")
        detector = str(ge.get("detector") or "")
        notes["geneval"] = (subset, "" if detector.startswith("mmdet") else f"detector: {detector or 'unknown'}")
    cb = _read_json(results / "compbench" / run / "summary.json") or {}
    if cb:
        per = int(cb.get("images_per_prompt") or 10)
        official = cb.get("edition") == "official"
        subset = subset_label(cb.get("subset") or {}) or (
            f"{per} images per prompt (paper 10)" if official and per < 10 else "")
        judge = str(cb.get("judge") or "unknown")
        notes["compbench"] = (subset, "" if "UniDet" in judge else f"judge: {judge}")  # the paper's spatial: UniDet
    meta = _read_json(results / "metrics" / run / "metrics.meta.json") or {}
    differs = []
    if meta and meta.get("protocol") != "paper":
        differs.append(f"eval.protocol {meta.get('protocol') or 'custom'} (not the paper's prompts, N and teacher "
                       "reference)")
    notes["metrics"] = (subset_label(meta.get("subset") or {}), "; ".join(differs))
    notes["clip_scale"] = ("", "100 x cosine scale (the paper reports cosine)"
                           if meta.get("clip_score_scale") == "torchmetrics" else "")
    return notes


def add_protocol_warnings(table: pd.DataFrame, results: Path, paper: bool) -> pd.DataFrame:
    """`protocol_warning` of every row with a value: the metrics stage's flags and a declared subset for
    every family; for a family with published numbers also what else differs from the paper's protocol
    (fewer images, another detector or judge)."""
    notes = {run: protocol_notes(results, run) for run in dict.fromkeys(table.run)}
    for i, row in table.iterrows():
        if row.value is None or pd.isna(row.value):
            continue
        kind = row.metric.split("_")[0] if row.metric.split("_")[0] in ("geneval", "compbench") else "metrics"
        subset, tool = notes[row.run].get(kind, ("", ""))
        if row.metric == "clip_score" and notes[row.run].get("clip_scale", ("", ""))[1]:
            tool = "; ".join(x for x in (tool, notes[row.run]["clip_scale"][1]) if x)
        flag = row.protocol_warning if isinstance(row.protocol_warning, str) else ""
        paper_note = protocol_warning(row.metric, row.n_images, subset=subset, tool=tool) if paper else subset
        text = "; ".join(dict.fromkeys(x for x in (flag, paper_note) if x))
        table.at[i, "protocol_warning"] = text or None
    return table


def seed_table(params: dict, results: Path, revision: str | None = None) -> pd.DataFrame:
    """The long table with one row per run (variant x training seed) x metric, the teacher's benchmark
    rows first (seed empty), each run's bootstrap intervals and paired comparisons with `full` of the
    same seed. Column `run` names the folder."""
    family = family_name(params)
    revision = revision or git_revision()
    rows = [{"variant": t, "family": family, **r, "seed": None, "revision": revision, "run": t}
            for t in TEACHER_RUNS for r in run_rows(results, t, teacher=True)]
    for variant, seed, run in pipeline_runs(params):
        rows += [{"variant": variant, "family": family, **r, "seed": seed, "revision": revision, "run": run}
                 for r in run_rows(results, run)]
    for variant, seed, run in euler_runs(params):  # the paper's "(Euler)" rows
        rows += [{"variant": variant, "family": family, **r, "seed": seed, "revision": revision, "run": run}
                 for r in run_rows(results, run)]
    table = pd.DataFrame(rows, columns=COLUMNS + ["run"]).astype(
        {"ci_low": float, "ci_high": float, "p_vs_full": float, "n_seeds": "Int64", "fd_bias": float, "seed_std": float,
         "seed": "Int64"})
    table[["protocol_warning", "source", "provenance"]] = table[["protocol_warning", "source", "provenance"]].astype(object)
    table = add_protocol_warnings(table, results, paper=paper_family(family) is not None)
    return add_uncertainty(table, results, *bootstrap_settings(params))


def bootstrap_settings(params: dict) -> tuple[int, int]:
    """(replicates, seed) of the bootstrap: params `eval.bootstrap` and the evaluation seed."""
    draws = int((params.get("eval") or {}).get("bootstrap", SCHEMA["eval"].defaults["bootstrap"]))
    return draws, int((params.get("eval") or {}).get("seed", params.get("seed")) or 0)


def paired_seed_p(values: dict[int, float], full: dict[int, float]) -> float | None:
    """Two-sided paired t-test over the seeds both ran (None with fewer than 2 shared seeds or no spread)."""
    shared = sorted(set(values) & set(full))
    if len(shared) < 2:
        return None
    diff = np.array([values[k] - full[k] for k in shared])
    if np.allclose(diff, diff[0]):  # no spread across seeds (discrete scores): a t-test says nothing
        return None
    return float(stats.ttest_rel([values[k] for k in shared], [full[k] for k in shared]).pvalue)


def across_seeds(by_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per variant x metric (module docstring): one seed keeps its row as it is; several give
    the mean, the Student-t interval and spread across seeds and a paired t-test against `full`."""
    rows = []
    groups = by_seed.groupby(["variant", "metric"], sort=False, dropna=False)
    for (variant, metric), g in groups:
        ok = g[g.value.notna()]
        first = (ok if len(ok) else g).iloc[0].to_dict()
        row = {c: first.get(c) for c in COLUMNS}
        row["seed"] = " ".join(str(int(x)) for x in ok.seed.dropna()) or None
        for column in ("protocol_warning", "provenance"):  # every seed's, not only the first's
            texts = [str(x) for x in ok[column].dropna() if str(x)] if column in ok else []
            row[column] = "; ".join(dict.fromkeys(texts)) or row.get(column)
        if len(ok) >= 2:
            mean, lo, hi = seed_interval(ok.value.astype(float).tolist())
            if metric in LOWER_IS_BETTER:  # a distance is never negative (as the within-run FD interval)
                lo = max(0.0, lo)
            row.update(value=mean, ci_low=lo, ci_high=hi, n_seeds=len(ok), seed_std=float(ok.value.std(ddof=1)),
                       fd_bias=float(ok.fd_bias.mean()) if ok.fd_bias.notna().any() else None, p_vs_full=None)
            other = comparison_variant(variant)
            if variant not in (other, "full", *TEACHER_RUNS):
                full = by_seed[(by_seed.variant == other) & (by_seed.metric == metric) & by_seed.value.notna()]
                row["p_vs_full"] = paired_seed_p(dict(zip(ok.seed.astype(int), ok.value.astype(float))),
                                                 dict(zip(full.seed.astype(int), full.value.astype(float))))
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS).astype({"ci_low": float, "ci_high": float, "p_vs_full": float,
                                                       "n_seeds": "Int64", "fd_bias": float, "seed_std": float})


def with_published(table: pd.DataFrame, family: str) -> pd.DataFrame:
    """The table followed by the paper's rows `published:<method>` of the same family (none for ToyWorld):
    value, the paper's image count and the table / row in `source` (protocols/published.py)."""
    rows = published_rows(paper_family(family))
    if not rows:
        return table
    revision = table.revision.iloc[0] if len(table) else None
    text = {"protocol_warning": object, "source": object, "provenance": object}
    extra = pd.DataFrame([{**r, "revision": revision} for r in rows], columns=COLUMNS).astype(text)
    dtypes = {**table.dtypes.to_dict(), **text}
    return pd.concat([table.astype(text), extra.astype(dtypes)], ignore_index=True)


def results_table(params: dict, results: Path, revision: str | None = None) -> pd.DataFrame:
    """The long table: teacher (benchmarks only, where present) then every variant, over its seeds, then
    the published rows of the same family."""
    return with_published(across_seeds(seed_table(params, results, revision)), family_name(params))


def along_training_table(params: dict, results: Path) -> pd.DataFrame:
    """(variant, seed, step, metric, value) of every run's metrics along training (its summary.json)."""
    rows = []
    for variant, seed, run in pipeline_runs(params):
        summary = _read_json(results / "training" / run / "summary.json") or {}
        for point in summary.get("along_training") or []:
            for metric in ALONG_TRAINING:
                if _number(point.get(metric)) is not None:
                    rows.append({"variant": variant, "seed": seed, "step": int(point["step"]), "metric": metric,
                                 "value": float(point[metric])})
    return pd.DataFrame(rows, columns=["variant", "seed", "step", "metric", "value"])


def along_training_markdown(curves: pd.DataFrame, variants: list[str]) -> str:
    """The paper's Tab. 8 shape: per metric, variants x evaluated iterations (mean over seeds, ± their
    standard deviation with two or more seeds)."""
    body = ["# Metrics along training (paper Tab. 8 shape)", ""]
    if curves.empty:
        return "\n".join(body + ["No run has recorded metrics along training (train.eval_every: 0, or not run yet).",
                                  ""])
    n_seeds = int(curves.groupby("variant").seed.nunique().max())
    body += ["Each distill run samples a fixed probe set (train.eval_prompts prompts, fixed noise) every "
             "train.eval_every iterations; iteration 0 is the student before training. "
             + (f"Mean ± standard deviation over {n_seeds} training seeds." if n_seeds > 1 else "One training seed.")
             + " Fréchet distances of the small probe set are biased upwards: compare them along a curve and "
             "between variants, not with the final evaluation's.", ""]
    for metric in ALONG_TRAINING:
        sub = curves[curves.metric == metric]
        if sub.empty:
            continue
        steps = sorted(sub.step.unique())
        body += [f"## {metric}", "", "| Method | " + " | ".join(f"{s:,}" for s in steps) + " |",
                 "|---|" + "---|" * len(steps)]
        for v in [v for v in variants if v in set(sub.variant)]:
            cells = []
            for step in steps:
                x = sub[(sub.variant == v) & (sub.step == step)].value
                text = _fmt(float(x.mean())) if len(x) else "—"
                cells.append(text + (f" ± {_fmt(float(x.std(ddof=1)))}" if len(x) > 1 else ""))
            body.append(f"| {variant_label(v)} | " + " | ".join(cells) + " |")
        body.append("")
    return "\n".join(body)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def best_by_metric(table: pd.DataFrame, variants: list[str]) -> dict[str, float]:
    """Best value per metric over `variants` (min for distances, max otherwise)."""
    best = {}
    sub = table[table.variant.isin(variants) & table.value.notna()]
    for metric, g in sub.groupby("metric"):
        best[metric] = g.value.min() if metric in LOWER_IS_BETTER else g.value.max()
    return best


def _present(x) -> bool:
    return x is not None and not pd.isna(x)


def markdown_table(table: pd.DataFrame, variants: list[str], columns: list[tuple[str, str]]) -> str:
    """Variants x metrics: value ± half its 95 % interval, * where it differs from `full` (p < 0.05),
    the best value per column in bold."""
    competing = ablation_rows(variants)
    best = best_by_metric(table, competing)
    lookup = {(r.variant, r.metric): r for r in table.itertuples()}
    seeds = {r.variant: r.seed for r in table.itertuples() if _present(r.seed) and r.variant not in TEACHER_RUNS}
    seeds_max = int(table.n_seeds.dropna().max()) if "n_seeds" in table and table.n_seeds.notna().any() else 1
    lines = ["| Method | " + " | ".join(label for _, label in columns) + " | Seeds |",
             "|---|" + "---|" * (len(columns) + 1)]
    for v in variants:
        cells = []
        for metric, _ in columns:
            row = lookup.get((v, metric))
            value = float(row.value) if row is not None and _present(row.value) else None
            text = _fmt(value)
            if value is not None and v in competing and metric in best and value == best[metric]:
                text = f"**{text}**"
            if value is not None and _present(getattr(row, "ci_low", None)):
                half = (row.ci_high - row.ci_low) / 2
                if metric in LOWER_IS_BETTER and row.ci_low == 0 and abs(row.ci_high + row.ci_low - 2 * value) > 1e-9:
                    text += f" ({_fmt(row.ci_low)}–{_fmt(row.ci_high)})"  # asymmetric (clipped at 0)
                else:
                    text += f" ± {_fmt(half)}"
            n = getattr(row, "n_seeds", None)
            if value is not None and _present(n) and seeds_max > 1 and int(n) < seeds_max and v not in TEACHER_RUNS:
                text += f" [{int(n)} seed{'s' if int(n) > 1 else ''}]"  # not the mean over every seed
            if value is not None and _present(getattr(row, "p_vs_full", None)) and row.p_vs_full < SIGNIFICANT:
                text += "*"
            cells.append(text)
        lines.append(f"| {variant_label(v)} | " + " | ".join(cells) + f" | {seeds.get(v, '—')} |")
    return "\n".join(lines)


def uncertainty_note(table: pd.DataFrame) -> list[str]:
    """How to read ± and *, and what the intervals leave out (computed, not guessed)."""
    if "ci_low" not in table or not table.ci_low.notna().any():
        return []
    seeds = table.n_seeds.dropna()
    n_seeds = int(seeds.max()) if len(seeds) else 1
    significant = table[(table.p_vs_full < SIGNIFICANT) & table.p_vs_full.notna()]
    compared = table[table.p_vs_full.notna()]
    if n_seeds < 2:
        how = (f"± is half the width of the 95 % bootstrap interval over prompts; * marks a difference from "
               f"`full` with p < {SIGNIFICANT} (paired bootstrap on the same prompts and seeds)")
        seeds_text = ("One training seed: the intervals do not include seed-to-seed variation, which on this toy "
                      "scale can reorder the variants (three seeds: dvc exp run -S 'seeds=[0,1,2]').")
    else:
        how = (f"Values are means over {n_seeds} training seeds; ± is half the width of their 95 % Student-t "
               f"interval across seeds ((lo–hi) where a distance's interval is clipped at 0); * marks a difference "
               f"from `full` with p < {SIGNIFICANT} (paired t-test over the seeds both ran; per-seed values and "
               f"bootstrap intervals: summary_by_seed.csv); a value marked [k seeds] has fewer runs and keeps "
               f"its own interval")
        seeds_text = ""
    euler = (f" An Euler row (the same weights, the deterministic sampler) is compared with `full{EULER}` (with "
             f"`full` for `full{EULER}` itself: the sampler's effect) and does not compete for the bold value."
             if table.variant.str.endswith(EULER).any() else "")
    return [f"{how}: {len(significant)} of {len(compared)} comparisons; the others are within noise." + euler + " "
            + seeds_text + fd_bias_note(table)]


def fd_bias_note(table: pd.DataFrame) -> str:
    biased = table[table.fd_bias.notna()] if "fd_bias" in table else table.iloc[0:0]
    if biased.empty:
        return ""
    parts = [f"{m} about +{g.fd_bias.median():.3g} (values {g.value.min():.3g}-{g.value.max():.3g})"
             for m, g in biased.groupby("metric", sort=False)]
    n = int(biased.n_images.dropna().max()) if biased.n_images.notna().any() else None
    return (f" Fréchet distances of {n or 'N'}-image sets are biased upwards; the bootstrap estimates that bias at "
            + "; ".join(parts) + " (column `fd_bias`): compare them only at the same N, never with published "
            "values at another N.")


def skipped_notes(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    sub = table[table.metric.isin(metrics) & table.value.isna()]
    notes = []
    for (metric, reason), g in sub.groupby(["metric", "reason"], sort=True):
        notes.append(f"- `{metric}` ({', '.join(sorted(g.variant))}): {reason}")
    return notes


def clip_label(table: pd.DataFrame) -> str:
    """The CLIP column's heading with its scale (the metrics stage's `source`: cosine or torchmetrics)."""
    sources = table[(table.metric == "clip_score") & table.source.notna()].source.astype(str) if "source" in table \
        else pd.Series(dtype=str)
    if sources.str.contains("torchmetrics").any():
        return "CLIP (100 x cos)"
    return "CLIP (cos)"


def ablation_markdown(table: pd.DataFrame, variants: list[str]) -> str:
    """Tab. 2 shape. Where Inception FID-T did not run but the ToyWorld-feature FD did, that FD is
    shown in the FID-T column under its own name (it is not FID)."""
    columns = [(m, clip_label(table) if m == "clip_score" else label) for m, label in ABLATION_COLUMNS]
    fid_ran = table[(table.metric == "fid_t") & table.value.notna()].shape[0] > 0
    toy_ran = table[(table.metric == "fd_t_toyworld") & table.value.notna()].shape[0] > 0
    note = []
    if not fid_ran and toy_ran:
        columns[0] = ("fd_t_toyworld", "FD-T (ToyWorld features)")
        note = ["FD-T (ToyWorld features) is a Fréchet distance to the teacher's samples in the toy encoder's "
                "feature space (`fd_t_toyworld`), shown where the paper has FID-T because Inception weights "
                "are not available here; it is not FID and not comparable with published FID-T values."]
    shown = [v for v in variants if v not in TEACHER_RUNS]
    body = [
        "# Ablation (paper Tab. 2 shape)", "",
        f"Family: {table.family.iloc[0] if len(table) else 'unknown'}; revision {table.revision.iloc[0] if len(table) else 'unknown'}. "
        "Best value per column in bold (lower is better for FID/FD, higher for the rest).", "",
        markdown_table(table, shown, columns), "",
    ]
    body += note + ([""] if note else [])
    uncertainty = uncertainty_note(table[table.variant.isin(shown) & table.metric.isin([m for m, _ in columns])])
    body += uncertainty + ([""] if uncertainty else [])
    notes = skipped_notes(table[table.variant.isin(shown)], [m for m, _ in columns])
    if notes:
        body += ["Not reported (—):", *notes, ""]
    return "\n".join(body)


def published_markdown(table: pd.DataFrame, variants: list[str], family: str) -> str:
    """The user's rows next to the paper's for the same family (paper Tab. 1, 2, 4, 5), with what makes a
    value not comparable (`protocol_warning`: N, subset, detector)."""
    body = ["## Published numbers (SenseFlow paper)", ""]
    published = table[table.variant.str.startswith(PREFIX)]
    if published.empty:
        return "\n".join(body + [f"The paper publishes no numbers for `{family}`; with `train.preset` sd35_large, flux "
                                 "or sdxl its Tab. 1, 2, 4 and 5 rows (protocols/published_senseflow_iclr2026.csv) "
                                 "appear here and in summary.csv as `published:<method>`.", ""])
    order = METRICS + GENEVAL + COMPBENCH
    metrics = sorted(dict.fromkeys(published.metric), key=lambda m: order.index(m) if m in order else len(order))
    ours = table[table.variant.isin([*TEACHER_RUNS, *variants]) & table.metric.isin(metrics) & table.value.notna()]
    shown = [m for m in metrics if m in set(ours.metric)] or metrics
    lookup = {(r.variant, r.metric): r for r in table.itertuples()}
    rows = [v for v in [*TEACHER_RUNS, *variants] if v in set(ours.variant)] + list(dict.fromkeys(published.variant))
    body += ["| Method | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    warnings = {}
    for v in rows:
        cells = []
        for m in shown:
            r = lookup.get((v, m))
            value = float(r.value) if r is not None and _present(r.value) else None
            text = _fmt(value)
            warning = getattr(r, "protocol_warning", None) if r is not None else None
            if value is not None and isinstance(warning, str) and warning:
                warnings.setdefault(warning, []).append(f"{v}/{m}")
                text += " †"
            cells.append(text)
        label = v.removeprefix(PREFIX) + " (paper)" if v.startswith(PREFIX) else variant_label(v)
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    body.append("")
    if warnings:
        body += ["† not comparable with the published value as computed:"]
        body += [f"- {w} ({len(cells)} values, e.g. {cells[0]})" for w, cells in warnings.items()] + [""]
    body += ["Paper values: protocols/published_senseflow_iclr2026.csv (table and row of each in summary.csv `source`).",
             ""]
    return "\n".join(body)


def ttur_markdown(results: Path) -> str:
    """The TTUR sweep's table and verdict (`python -m train.ttur_sweep` -> results/ttur/sweep.md, paper Fig. 3),
    one heading level down, where the sweep has run (the file is a dependency of the report stage, so
    `dvc repro` redoes the report after a sweep)."""
    path = results / "ttur" / "sweep.md"
    if not path.is_file():
        return ""
    text = path.read_text().replace("\n# ", "\n## ")
    return "\n" + ("#" + text if text.startswith("# ") else text)


def distillation_markdown(by_seed: pd.DataFrame, results: Path, draws: int, seed: int) -> list[str]:
    """Each student run's GenEval overall minus the teacher's and minus the teacher's at the student's step
    count (`teacher_few`), paired on the same prompts and seeds: difference, 95 % bootstrap interval, p.
    Empty when either teacher run or the bootstrap is missing."""
    metric = "geneval_overall"
    teachers = {t: prompt_samples(results, t).get(metric) for t in TEACHER_RUNS}
    if not draws or any(s is None for s in teachers.values()):
        return []
    lines = ["## Distillation against the teacher (GenEval overall)", "",
             "Student minus teacher on the same prompts and seeds: difference [95 % bootstrap interval] (p).", "",
             "| student run | - teacher | - teacher at the student's steps (Euler) |", "|---|---|---|"]
    runs = by_seed[(by_seed.metric == metric) & by_seed.value.notna() & ~by_seed.variant.isin(TEACHER_RUNS)]
    for row in runs.itertuples():
        sample = prompt_samples(results, row.run).get(metric)
        if sample is None:
            continue
        cells = []
        for teacher in TEACHER_RUNS:
            try:
                d = paired_difference(sample, teachers[teacher], draws, seed)
            except ValueError:  # other prompts (e.g. other benchmark params): not paired
                cells.append("not paired")
                continue
            cells.append(f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] (p {d['p']:.2g})")
        lines.append(f"| {variant_label(row.variant)}, seed {row.seed} (`{row.run}`) | {cells[0]} | {cells[1]} |")
    return lines + [""]


def benchmarks_markdown(table: pd.DataFrame, variants: list[str], distillation: list[str] | None = None) -> str:
    ge = [(m, m.removeprefix("geneval_")) for m in GENEVAL]
    cb = [(m, m.removeprefix("compbench_")) for m in COMPBENCH]
    def present(metrics):  # a teacher run only where it has values (teacher_few: GenEval only)
        ran = set(table[table.metric.isin(metrics) & table.value.notna()].variant)
        return [v for v in [*TEACHER_RUNS, *variants] if v in set(table.variant)
                and (v not in TEACHER_RUNS and not v.endswith(EULER) or v in ran)]

    body = ["# Benchmarks", "", "## GenEval (per task, image-level accuracy; overall = mean of tasks)", "",
            markdown_table(table, present(GENEVAL), ge), "", "## T2I-CompBench (per category)", "",
            markdown_table(table, present(COMPBENCH), cb), ""]
    uncertainty = uncertainty_note(table[table.metric.isin([m for m, _ in ge + cb])])
    body += uncertainty + ([""] if uncertainty else [])
    body += distillation or []
    notes = skipped_notes(table, [m for m, _ in ge + cb])
    if notes:
        body += ["Not reported (—):", *notes, ""]
    return "\n".join(body)


def provenance_records(params: dict, results: Path) -> dict:
    """{run: {"metrics" | "geneval" | "compbench": the stage's provenance record}} (protocols/provenance.py)."""
    out = {}
    for run in [*TEACHER_RUNS, *(r for _, _, r in pipeline_runs(params)), *(r for _, _, r in euler_runs(params))]:
        records = {}
        meta = _read_json(results / "metrics" / run / "metrics.meta.json") or {}
        if meta.get("provenance"):
            records["metrics"] = meta["provenance"]
        for name in ("geneval", "compbench"):
            record = _read_json(results / name / run / "provenance.json")
            if record:
                records[name] = record
        if records:
            out[run] = records
    return out


def write_report(params_path: str | Path, results: str | Path, out: str | Path,
                 revision: str | None = None) -> pd.DataFrame:
    params = load_params(params_path)
    results, out = Path(results), writable_folder(out, "the report folder", "--out")
    if results.exists():  # a missing results folder gives the empty table (nothing has run yet)
        readable_folder(results, "the results folder", "--results")
    by_seed = seed_table(params, results, revision)
    family = family_name(params)
    table = with_published(across_seeds(by_seed), family)
    variants = report_variants(params)
    curves = along_training_table(params, results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv", index=False)
    by_seed.drop(columns="run").to_csv(out / "summary_by_seed.csv", index=False)
    (out / "provenance.json").write_text(json.dumps(provenance_records(params, results), indent=2) + "\n")
    (out / "ablation.md").write_text(ablation_markdown(table, variants) + published_markdown(table, variants, family)
                                     + ttur_markdown(results))
    distillation = distillation_markdown(by_seed, results, *bootstrap_settings(params))
    (out / "benchmarks.md").write_text(benchmarks_markdown(table, variants, distillation))
    curves.to_csv(out / "along_training.csv", index=False)
    (out / "along_training.md").write_text(along_training_markdown(curves, list(params.get("variants") or {})))
    return table


def main(argv=None) -> pd.DataFrame:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    table = write_report(args.params, args.results, args.out)
    ran = table.value.notna().sum()
    print(f"report: {len(table)} rows ({ran} with values) -> {args.out}/summary.csv, summary_by_seed.csv, ablation.md, "
          f"benchmarks.md, along_training.csv/.md")
    return table


if __name__ == "__main__":
    run_command(main)
