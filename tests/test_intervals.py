"""Intervals and paired comparisons (evaluate/intervals.py): coverage on data with a known answer,
exact agreement with the numbers they qualify, and the report's columns built from real stage files."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import linalg, stats

from dashboards.report import COMPBENCH, GENEVAL, METRICS, main as report_main, prompt_samples
from evaluate.intervals import (MetricSample, load_samples, paired_comparison, replicate_indices, save_samples,
                                seed_interval)


def gaussian_fd(mu1, s1, mu2, s2) -> float:
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        values = rng.normal(3.0, 2.0, size=120)
        lo, hi = MetricSample("mean", values, np.arange(120)).interval(400, trial)
        hits += lo <= 3.0 <= hi
    assert 0.90 <= hits / 200 <= 0.99, hits


def test_fd_interval_covers_the_population_distance():
    """Two Gaussians with a known Fréchet distance: the bias-corrected interval of the N-sample
    estimate covers it in most trials (the plain percentile interval, shifted up by the small-N
    bias, would not)."""
    rng = np.random.default_rng(1)
    d, n = 3, 400
    mu_s, mu_t = np.array([0.4, 0.0, 0.0]), np.zeros(d)
    cov = np.diag([1.0, 0.5, 2.0])
    truth = gaussian_fd(mu_s, cov, mu_t, cov)
    hits = 0
    for trial in range(60):
        s = rng.multivariate_normal(mu_s, cov, size=n)
        t = rng.multivariate_normal(mu_t, cov, size=n)
        lo, hi = MetricSample("fd", s, np.arange(n), t).interval(200, trial)
        assert lo <= MetricSample("fd", s, np.arange(n), t).value() + 1e-9
        hits += lo <= truth <= hi
    assert hits / 60 >= 0.85, hits


def test_fd_interval_is_centred_on_the_estimate_and_states_its_bias():
    """High dimension, few images (as on ToyWorld: 128-d, 384 images): the N-image estimate is far above
    the population distance (0 here: both sets come from one distribution); the interval describes the
    estimate's spread around the reported value, and the bias estimate accounts for most of the gap."""
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(100, 40)), rng.normal(size=(100, 40))
    sample = MetricSample("fd", s, np.arange(100), t)
    boot = sample.bootstrap(200, 0)
    lo, hi = boot["ci"]
    assert lo <= sample.value() <= hi
    assert 0.5 * sample.value() < boot["bias"] < 1.5 * sample.value()  # the estimate is mostly bias


def test_paired_comparison_separates_a_real_difference_from_noise():
    rng = np.random.default_rng(2)
    base = rng.normal(0.3, 0.05, size=200)
    prompts = np.arange(200)
    full = MetricSample("mean", base, prompts)
    same = MetricSample("mean", base + rng.normal(0, 0.001, size=200), prompts)
    better = MetricSample("mean", base + 0.01, prompts)  # tiny but consistent: a paired test sees it
    assert paired_comparison(same, full, 500, 0) > 0.05
    assert paired_comparison(better, full, 500, 0) == pytest.approx(1 / 500)
    with pytest.raises(ValueError, match="same prompts"):
        paired_comparison(MetricSample("mean", base, prompts[::-1]), full, 100, 0)


def test_stratified_resampling_keeps_each_task_and_matches_geneval_overall():
    strata = np.array(["a"] * 3 + ["b"] * 5)
    idx = replicate_indices(8, 50, 0, strata)
    assert (strata[idx] == strata).all()  # every replicate keeps 3 prompts of task a and 5 of task b
    values = np.array([1, 0, 1, 0.5, 0.5, 0, 0, 1.0])
    sample = MetricSample("mean", values, np.arange(8), strata=strata)
    assert sample.value() == pytest.approx((2 / 3 + 0.4) / 2)  # mean of task means, as GenEval's overall


def test_seed_interval_is_students_t():
    mean, lo, hi = seed_interval([3.1, 9.2, 4.0])
    half = stats.t.ppf(0.975, 2) * np.std([3.1, 9.2, 4.0], ddof=1) / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((5.4333333, 5.4333333 - half, 5.4333333 + half))
    with pytest.raises(ValueError):
        seed_interval([1.0])


def test_samples_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    samples = {"fd_t_toyworld": MetricSample("fd", rng.normal(size=(10, 4)), np.arange(10), rng.normal(size=(10, 4))),
               "clip_score": MetricSample("mean", rng.normal(size=10), np.arange(10), floor=0.0),
               "g": MetricSample("mean", rng.random(6), np.array(list("abcdef")), strata=np.array(list("xxyyzz")))}
    save_samples(tmp_path / "p.npz", samples)
    back = load_samples(tmp_path / "p.npz")
    for name, s in samples.items():
        assert back[name].value() == pytest.approx(s.value()) and back[name].kind == s.kind
        assert back[name].floor == s.floor and np.array_equal(back[name].prompts, s.prompts)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def stage_tree(tmp_path, seeds=(0,)):
    """Stage outputs as the metrics, geneval, compbench and distill stages write them, for full and
    wo_isg trained with each of `seeds` (folders <variant>-<seed>)."""
    rng = np.random.default_rng(4)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"family": "toy"}, "eval": {"seed": 0, "bootstrap": 300},
                                      "seeds": list(seeds), "variants": {"full": {}, "wo_isg": {"isg": False}}}))
    res = tmp_path / "results"
    teacher = rng.normal(size=(96, 4))
    for (v, shift, p_correct), seed in itertools.product((("full", 0.1, 0.8), ("wo_isg", 0.6, 0.5)), seeds):
        run = f"{v}-{seed}"
        shift += 0.05 * seed
        student = teacher + shift + rng.normal(0, 0.3, size=teacher.shape)
        samples = {"fd_t_toyworld": MetricSample("fd", student, np.arange(96), teacher),
                   "clip_score": MetricSample("mean", rng.normal(30 - 5 * shift, 1, size=96), np.arange(96), floor=0.0)}
        values = {m: None for m in METRICS} | {m: s.value() for m, s in samples.items()}
        write(res / "metrics" / run / "metrics.json", values)
        write(res / "metrics" / run / "metrics.meta.json", {"n_images": {m: 96 for m in samples}, "skipped": {}})
        save_samples(res / "metrics" / run / "per_prompt.npz", samples)
        rows = []
        for i in range(24):
            tag = ["counting", "position", "colors"][i % 3]
            for k in range(4):
                rows.append({"filename": f"results/geneval/{run}/images/{i:05}/samples/{k:05}.png", "tag": tag,
                             "prompt": f"p{i}", "correct": bool(rng.random() < p_correct), "metadata": f"m{i}"})
        frame = pd.DataFrame(rows)
        write(res / "geneval" / run / "results.jsonl", frame.to_json(orient="records", lines=True))
        tasks = frame.groupby("tag", sort=False).correct.mean()
        write(res / "geneval" / run / "summary.json", {"geneval_overall": float(tasks.mean()),
                                                       **{f"geneval_{t}": float(a) for t, a in tasks.items()}})
        comp = pd.DataFrame([{"category": c, "prompt": f"{c} {i}", "images": 2, "score": float(rng.random() < p_correct)}
                             for c in ("color", "shape") for i in range(16)])
        write(res / "compbench" / run / "per_prompt.csv", comp.to_csv(index=False))
        write(res / "compbench" / run / "summary.json", {f"compbench_{c}": float(g.score.mean())
                                                         for c, g in comp.groupby("category")})
        write(res / "training" / run / "summary.json", {"steps": 200, "alarms": [], "along_training": [
            {"step": step, "eval/fd_t_toyworld": 10 * shift + 5 / (1 + step / 100), "eval/clip_score": 20 + step / 100,
             "eval/oracle_accuracy": 0.5 + step / 1000} for step in (0, 100, 200)]})
    return params, res


def test_report_intervals_and_paired_comparisons_from_stage_files(tmp_path):
    params, res = stage_tree(tmp_path)
    for v in ("full-0", "wo_isg-0"):  # each per-prompt sample reproduces the value its stage reported
        samples = prompt_samples(res, v)
        summary = json.loads((res / "geneval" / v / "summary.json").read_text())
        assert samples["geneval_overall"].value() == pytest.approx(summary["geneval_overall"])
        assert samples["geneval_position"].value() == pytest.approx(summary["geneval_position"])
        comp = json.loads((res / "compbench" / v / "summary.json").read_text())
        assert samples["compbench_color"].value() == pytest.approx(comp["compbench_color"])
    report_main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert {"ci_low", "ci_high", "n_seeds", "p_vs_full"} <= set(table.columns)
    ran = table[table.value.notna()]
    assert (ran.ci_low <= ran.value + 1e-9).all() and (ran.value <= ran.ci_high + 1e-9).all()
    assert set(ran.n_seeds) == {1}
    assert table[table.variant == "full"].p_vs_full.isna().all()
    fd = table[(table.variant == "wo_isg") & (table.metric == "fd_t_toyworld")].iloc[0]
    assert fd.p_vs_full < 0.05  # a clearly worse variant is marked
    overall = table[(table.variant == "wo_isg") & (table.metric == "geneval_overall")].iloc[0]
    assert 0 < overall.p_vs_full <= 1 and overall.ci_low < overall.value < overall.ci_high
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert " ± " in md and "*" in md.split("| w/o ISG |")[1].splitlines()[0]
    assert "One training seed" in md
    fd_rows = table[table.metric == "fd_t_toyworld"]
    assert fd_rows.fd_bias.notna().all() and table[table.metric == "clip_score"].fd_bias.isna().all()
    assert "biased upwards" in md and "fd_t_toyworld about +" in md
    assert set(GENEVAL[:1]) <= set(table.metric) and set(COMPBENCH[:2]) <= set(table.metric)


def test_three_seeds_give_means_intervals_across_seeds_and_paired_tests(tmp_path):
    """seeds [0, 1, 2]: summary.csv has one row per variant x metric with the mean over seeds, its
    Student-t interval, the spread and a paired t-test against `full`; summary_by_seed.csv keeps each
    run's row with its bootstrap interval; the metrics along training give the Tab. 8 table."""
    params, res = stage_tree(tmp_path, seeds=(0, 1, 2))
    report_main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    by_seed = pd.read_csv(tmp_path / "out" / "summary_by_seed.csv")
    assert not table.duplicated(["variant", "metric"]).any()
    fd = table[(table.variant == "wo_isg") & (table.metric == "fd_t_toyworld")].iloc[0]
    runs = by_seed[(by_seed.variant == "wo_isg") & (by_seed.metric == "fd_t_toyworld")]
    assert sorted(runs.seed) == [0, 1, 2] and runs.ci_low.notna().all()
    mean, lo, hi = seed_interval(runs.value.tolist())
    assert fd.n_seeds == 3 and fd.seed == "0 1 2"
    assert fd.value == pytest.approx(mean) and (fd.ci_low, fd.ci_high) == pytest.approx((lo, hi))
    assert fd.seed_std == pytest.approx(runs.value.std(ddof=1))
    full = by_seed[(by_seed.variant == "full") & (by_seed.metric == "fd_t_toyworld")].sort_values("seed")
    expected = stats.ttest_rel(runs.sort_values("seed").value, full.value).pvalue
    assert fd.p_vs_full == pytest.approx(expected) and fd.p_vs_full < 0.05
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "means over 3 training seeds" in md and "| 0 1 2 |" in md
    along = (tmp_path / "out" / "along_training.md").read_text()
    assert "## eval/fd_t_toyworld" in along and "| Method | 0 | 100 | 200 |" in along and " ± " in along
    curves = pd.read_csv(tmp_path / "out" / "along_training.csv")
    assert len(curves) == 2 * 3 * 3 * 3  # variants x seeds x steps x metrics


def test_paired_seed_test_says_nothing_without_spread():
    from dashboards.report import paired_seed_p

    assert paired_seed_p({0: 0.5, 1: 0.6}, {0: 0.5 - 1 / 64, 1: 0.6 - 1 / 64}) is None  # discrete, constant gap
    assert paired_seed_p({0: 1.0}, {0: 2.0}) is None  # one shared seed
    p = paired_seed_p({0: 1.0, 1: 2.0, 2: 3.5}, {0: 1.1, 1: 2.4, 2: 3.6})
    assert p == pytest.approx(stats.ttest_rel([1.0, 2.0, 3.5], [1.1, 2.4, 3.6]).pvalue)
