"""Altair charts of the dashboard (no Streamlit here, so they are testable on their own): the
teacher first and in a neutral grey, each variant in its own colour, 95 % intervals as error bars,
titled axes and a legend."""
from __future__ import annotations

import altair as alt
import pandas as pd

TEACHER_COLOR = "#9e9e9e"
VARIANT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def colour_scale(variants: list[str]) -> alt.Scale:
    """The teacher grey, the variants in a fixed order of distinct colours."""
    others = [v for v in variants if v != "teacher"]
    domain = (["teacher"] if "teacher" in variants else []) + others
    colours = ([TEACHER_COLOR] if "teacher" in variants else []) + \
        [VARIANT_COLORS[i % len(VARIANT_COLORS)] for i in range(len(others))]
    return alt.Scale(domain=domain, range=colours)


def benchmark_chart(frame: pd.DataFrame, order: list[str], title: str) -> alt.LayerChart:
    """Grouped bars (category x variant) of a benchmark's scores with 95 % interval error bars."""
    variants = [v for v in order if v in set(frame.variant)] + sorted(set(frame.variant) - set(order))
    scale = colour_scale(variants)
    base = alt.Chart(frame).encode(
        x=alt.X("category:N", title="category"),
        xOffset=alt.XOffset("variant:N", sort=variants),
        color=alt.Color("variant:N", sort=variants, scale=scale, title="variant"))
    bars = base.mark_bar().encode(y=alt.Y("value:Q", title=title), tooltip=["variant", "category", "value",
                                                                              "ci_low", "ci_high"])
    errors = base.transform_filter("isValid(datum.ci_low)").mark_rule(color="black").encode(
        y="ci_low:Q", y2="ci_high:Q")
    return alt.layer(bars, errors)


def curve_chart(frame: pd.DataFrame, metric: str, order: list[str], points: bool = False) -> alt.Chart:
    """Training curves: iteration on x, the metric on y, a colour per variant and one line per run
    (training seed) of it; `points` marks each evaluated iteration (the metrics along training)."""
    variants = [v for v in order if v in set(frame.variant)] + sorted(set(frame.variant) - set(order))
    detail = "run:N" if "run" in frame else "variant:N"
    tooltip = ["variant"] + (["seed"] if "seed" in frame else []) + ["step", "value"]
    return alt.Chart(frame).mark_line(point=points).encode(
        x=alt.X("step:Q", title="iteration"),
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("variant:N", sort=variants, scale=colour_scale(variants), title="variant"),
        detail=detail, tooltip=tooltip)


__all__ = ["TEACHER_COLOR", "colour_scale", "benchmark_chart", "curve_chart"]
