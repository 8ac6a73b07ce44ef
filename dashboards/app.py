"""SenseFlow workbench dashboard.

    python -m dashboards                     # http://localhost:8501, from any working directory
    streamlit run dashboards/app.py          # the same from the repository root (.streamlit/config.toml)

Reads results/ (the `report` stage's summary.csv, or the per-stage JSONs), runs/distill/<run>/
(dvclive curves, metrics along training, alarms; a run is <variant>-<seed>) and `dvc exp show`; locations can be changed with SENSEFLOW_RESULTS / SENSEFLOW_RUNS / SENSEFLOW_PARAMS
(dashboards/results.py). Every section degrades to a message when its inputs are missing. Served on
every interface (no .streamlit/config.toml in the working directory, or --server.address 0.0.0.0)
the app shows no results unless started with `python -m dashboards --share`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only dashboards/ on the path

from dashboards import charts as C  # noqa: E402
from dashboards import results as R  # noqa: E402

st.set_page_config(page_title="SenseFlow workbench", layout="wide")
LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
if st.get_option("server.address") not in LOCAL_ADDRESSES and not os.environ.get("SENSEFLOW_DASHBOARD_SHARE"):
    st.error(f"This dashboard is served on every network interface (server.address "
             f"{st.get_option('server.address') or 'unset'!r}), so it shows nothing. Start it with "
             "`python -m dashboards` (localhost), or `python -m dashboards --share` to share it deliberately.")
    st.stop()
st.title("SenseFlow workbench")
loc = R.Locations.from_env()
table, published = R.split_published(R.load_table(loc))
order = R.variant_order(loc, table)

for run, alarms in R.run_alarms(loc).items():
    signals = sorted({a["signal"] for a in alarms})
    st.warning(f"⚠ {R.run_label(run)}: {len(alarms)} collapse/oscillation alarm(s) ({', '.join(signals)}), first at "
               f"iteration {min(a['step'] for a in alarms)}: see its sample grids and curves "
               f"({loc.runs}/{run}/summary.json `alarms`; thresholds train.alarm_*).")

if table.empty:
    st.info(f"No results yet in `{loc.results}/`. Run `dvc repro` (the default ToyWorld pipeline) and reload; "
            "the table fills in as the metrics, geneval, compbench and report stages finish.")
else:
    st.caption(f"Family: {table['family'].iloc[0] if 'family' in table else 'unknown'} · "
               f"revision: {table['revision'].iloc[0] if 'revision' in table else 'unknown'} · results: `{loc.results}`")

    st.header("Variant × metric")
    wide = R.wide_table(table, order)
    wide.insert(0, "seeds", R.seeds_column(table, wide.index))  # the training seeds behind each row
    best = R.best_cells(table)

    def mark_best(col: pd.Series) -> list[str]:
        target = best.get(col.name)
        return ["font-weight: bold; background-color: #d4f4dd" if target is not None and v == target
                and idx not in R.TEACHER_RUNS
                else "" for idx, v in col.items()]

    st.dataframe(wide.style.apply(mark_best, axis=0).format(precision=4, na_rep="—"), width="stretch")
    scale_note = {"cosine": " (the paper's).", "100 x cosine": " (torchmetrics'; the paper reports cosine)."}.get(
        R.clip_scale(table), " (not recorded: a summary.csv from before the scale was; re-run the report).")
    st.caption("Best distilled variant per metric highlighted (lower is better for "
               + ", ".join(sorted(R.LOWER_IS_BETTER)) + "; higher for the rest). clip_score is on the "
               + R.clip_scale(table) + " scale" + scale_note)
    flagged = R.protocol_warnings(table)
    if not flagged.empty:
        st.warning("Not comparable with published values: "
                   + "; ".join(f"{r.metric} ({r.variants}): {r[3]}" for r in flagged.itertuples()))
    intervals = R.interval_table(table, order)
    if not intervals.empty:
        st.subheader("With 95 % intervals")
        st.dataframe(intervals, width="stretch")
        many = "n_seeds" in table and table.n_seeds.dropna().max() > 1
        st.caption(("Mean over the training seeds in `seeds`; ± half the 95 % Student-t interval across seeds; * a "
                    "difference from `full` with p < 0.05 (paired t-test over seeds)" if many else
                    "One training seed; ± half the 95 % bootstrap interval over prompts; * a difference from `full` "
                    "with p < 0.05 (paired bootstrap on the same prompts and seeds)")
                   + "; without * a difference is within noise.")
    gaps = R.skipped(table)
    if not gaps.empty:
        with st.expander(f"Metrics without a value ({len(gaps)})", expanded=False):
            st.dataframe(gaps, hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", pd.concat([table, published]).to_csv(index=False).encode(), file_name="summary.csv",
                       mime="text/csv")

    records = R.provenance_table(loc)
    with st.expander(f"Provenance ({len(records)} records: N, prompt set, samplers, model sha256, packages)",
                     expanded=False):
        if records.empty:
            st.info("No results/provenance.json yet (the report stage writes it).")
        else:
            st.dataframe(records, hide_index=True, width="stretch")
            st.caption("Each value's `provenance` in summary.csv is the id of its record here (results/provenance.json "
                       "has the full records).")

    st.header("Published numbers (SenseFlow paper)")
    view = R.published_view(table, published, order)
    if view.empty:
        family = table["family"].iloc[0] if "family" in table else "this family"
        st.info(f"The paper publishes no numbers for `{family}`; with train.preset sd35_large, flux or sdxl its "
                "Tab. 1, 2, 4 and 5 rows are set beside yours here.")
        with st.expander("The paper's tables (all families)", expanded=False):
            st.dataframe(R.paper_tables(), hide_index=True, width="stretch")
    else:
        st.dataframe(view.style.format(precision=4, na_rep="—"), width="stretch")
        st.caption("Yours beside the paper's for the same family. A value whose protocol differs from the paper's "
                   "(fewer images, a prompt subset, another detector or judge) is listed under `not comparable "
                   "because`; the table and row of each paper value are in summary.csv `source`.")

    st.header("Ablation (paper Tab. 2 shape)")
    st.markdown(R.ablation(loc, table))

    st.header("GenEval and T2I-CompBench")
    cols = st.columns(2)
    for col, (title, frame) in zip(cols, (("GenEval per task", R.geneval_frame(table)),
                                          ("T2I-CompBench per category", R.compbench_frame(table)))):
        with col:
            st.subheader(title)
            if frame.empty:
                st.info("No scores yet (the geneval / compbench stages have not run).")
            else:
                st.altair_chart(C.benchmark_chart(frame, order, "score"), width="stretch")
                st.caption("Teacher in grey; error bars: 95 % bootstrap interval over prompts.")

st.header("Metrics along training")
along = R.load_along_training(loc)
if along.empty:
    st.info(f"No metrics along training under `{loc.runs}/` yet (train.eval_every > 0 writes "
            "<run>/along_training.jsonl: FD-T, CLIP score and, on ToyWorld, oracle accuracy).")
else:
    names = [m for m in R.ALONG_TRAINING if m in set(along.metric)]
    cols = st.columns(len(names))
    for col, name in zip(cols, names):
        with col:
            st.altair_chart(C.curve_chart(along[along.metric == name], name, order, points=True), width="stretch")
    st.caption("A fixed probe set (train.eval_prompts prompts, fixed noise) sampled every train.eval_every "
               "iterations; one line per run (training seed). The small-N Fréchet distance is for comparing "
               "along the curve and between variants, not with the final evaluation. Table: results/along_training.md.")

st.header("Training curves")
curves = R.load_curves(loc)
if curves.empty:
    st.info(f"No dvclive logs under `{loc.runs}/` yet (the distill stage writes <variant>-<seed>/dvclive).")
else:
    available = [m for m in R.CURVES if m in set(curves.metric)] + sorted(set(curves.metric) - set(R.CURVES))
    available = [m for m in available if not m.startswith("eval/")] or available
    metric = st.selectbox("Curve", available, index=0)
    st.altair_chart(C.curve_chart(curves[curves.metric == metric], metric, order), width="stretch")

st.header("Samples: one prompt across teacher and variants")
prompts = R.sample_prompts(loc)
if not prompts:
    st.info(f"No generated samples under `{loc.results}/samples/` yet (the generate stages write them).")
else:
    index = st.selectbox("Prompt", list(prompts), format_func=lambda i: f"{i}: {prompts[i]}")
    images = R.sample_images(loc, index, order)
    for name, paths in images.items():
        st.markdown(f"**{R.run_label(name)}**")
        st.image([str(p) for p in paths[:8]], width=96)

st.header("DVC experiments")
experiments, message = R.dvc_experiments(loc.repo)
if message:
    st.info(message)
if not experiments.empty:
    names = R.metric_names(experiments)
    chosen = st.selectbox("Metric", names + ["(all metrics)"], index=0) if names else "(all metrics)"
    view = R.experiment_view(experiments, None if chosen == "(all metrics)" else chosen)
    st.dataframe(view, hide_index=True, width="stretch")
    st.caption(f"Params that differ between experiments, and each run's {chosen} "
               f"({len(view.columns)} of {len(experiments.columns)} columns of `dvc exp show`).")
