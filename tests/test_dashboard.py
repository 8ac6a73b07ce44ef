"""The Streamlit dashboard through Streamlit's AppTest: a synthetic results tree renders the table
(best marked), the ablation table, the benchmark bars, curves, sample grids and a CSV download; an
empty tree shows messages instead of a traceback."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dashboards import results as R
from dashboards.report import main as report_main
from tests.test_report import synthetic_tree

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"


def full_tree(tmp_path):
    params, res = synthetic_tree(tmp_path)
    report_main(["--params", str(params), "--results", str(res), "--out", str(res)])
    runs = tmp_path / "runs"
    for v, scale in (("full", 1.0), ("wo_isg", 2.0)):
        d = runs / f"{v}-0" / "dvclive" / "plots" / "metrics"
        d.mkdir(parents=True)
        (d / "loss_fake_score.tsv").write_text("step\tloss_fake_score\n" + "".join(
            f"{s}\t{scale * 0.1 / s}\n" for s in (10, 20, 30)))
        (runs / f"{v}-0" / "along_training.jsonl").write_text("".join(json.dumps(
            {"step": s, "eval/fd_t_toyworld": scale * 5 / (1 + s / 10), "eval/clip_score": 20 + s / scale,
             "eval/oracle_accuracy": 0.5 + s / 100}) + "\n" for s in (0, 10, 20, 30)))
    (runs / "wo_isg-0" / "summary.json").write_text(json.dumps({"alarms": [
        {"step": 20, "signal": "fake_loss_cv", "value": 1.4, "threshold": 1.0, "key": "alarm_fake_loss_cv_max"}]}))
    for name in ("teacher", "full-0"):
        folder = res / "samples" / name / "0"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(folder / f"{k}.png")
        (res / "samples" / name / "samples.jsonl").write_text(
            '{"prompt_index": 0, "k": 0, "prompt": "a photo of a red circle", "seed": 0}\n')
    return params, res, runs


def run_app(monkeypatch, tmp_path, params, res, runs):
    monkeypatch.setenv("SENSEFLOW_RESULTS", str(res))
    monkeypatch.setenv("SENSEFLOW_RUNS", str(runs))
    monkeypatch.setenv("SENSEFLOW_PARAMS", str(params))
    monkeypatch.setenv("SENSEFLOW_DVC_REPO", str(tmp_path))  # not a DVC repo: a message, quickly
    at = streamlit_testing.AppTest.from_file(str(APP), default_timeout=60)
    return at.run()


@pytest.fixture(autouse=True)
def server_address():
    """Streamlit's server.address as `python -m dashboards` sets it (localhost), whatever the test's cwd;
    restored afterwards."""
    from streamlit import config

    previous = config.get_option("server.address")
    config.set_option("server.address", "localhost")
    yield config
    config.set_option("server.address", previous)


def test_dashboard_served_on_every_interface_shows_nothing(monkeypatch, tmp_path, server_address):
    """Started from another folder, `streamlit run` misses .streamlit/config.toml and binds every
    interface: the app then refuses to show results unless shared deliberately."""
    params, res, runs = full_tree(tmp_path)
    at = run_app(monkeypatch, tmp_path, params, res, runs)
    assert not at.error and at.dataframe  # localhost: results shown
    server_address.set_option("server.address", None)
    at = streamlit_testing.AppTest.from_file(str(APP), default_timeout=60).run()
    assert "served on every network interface" in at.error[0].value and not at.dataframe
    monkeypatch.setenv("SENSEFLOW_DASHBOARD_SHARE", "1")  # python -m dashboards --share
    at = streamlit_testing.AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.error and at.dataframe


def test_dashboard_renders_a_results_tree(monkeypatch, tmp_path):
    params, res, runs = full_tree(tmp_path)
    at = run_app(monkeypatch, tmp_path, params, res, runs)
    assert not at.exception
    frames = at.dataframe
    assert frames, "no table rendered"
    wide = frames[0].value
    assert {"full", "wo_isg", "wo_ida"} <= set(wide.index) and "fd_t_toyworld" in wide.columns
    assert wide.loc["full", "fd_t_toyworld"] == 5.0
    md = "\n".join(m.value for m in at.markdown)
    assert "FD-T (ToyWorld features)" in md and "**5.0000**" in md
    assert [s.label for s in at.selectbox] == ["Curve", "Prompt"]
    assert any("DVC" in i.value or "dvc" in i.value for i in at.info)
    assert len(at.get("download_button")) == 1 and len(at.get("vega_lite_chart")) >= 5  # + 3 along training
    assert any("w/o ISG · seed 0" in w.value and "fake_loss_cv" in w.value for w in at.warning)  # alarm badge
    assert "seeds" in frames[0].value.columns and frames[0].value.loc["full", "seeds"] == "0"


def test_best_cells_follow_metric_direction(tmp_path):
    params, res, runs = full_tree(tmp_path)
    table = R.load_table(R.Locations(res, runs, params))
    best = R.best_cells(table)
    assert best["fd_t_toyworld"] == 5.0 and best["clip_score"] == 31.0
    assert R.load_curves(R.Locations(res, runs, params)).groupby("variant").size().to_dict() == {"full": 3, "wo_isg": 3}
    assert list(R.sample_images(R.Locations(res, runs, params), 0, ["teacher", "full"])) == ["teacher", "full-0"]


def test_metrics_along_training_and_experiments_table(tmp_path):
    params, res, runs = full_tree(tmp_path)
    along = R.load_along_training(R.Locations(res, runs, params))
    assert set(along.metric) == {"eval/fd_t_toyworld", "eval/clip_score", "eval/oracle_accuracy"}
    assert set(along.variant) == {"full", "wo_isg"} and set(along.seed) == {0} and set(along.step) == {0, 10, 20, 30}
    assert R.split_run("wo_both-12") == ("wo_both", 12) and R.split_run("teacher") == ("teacher", None)
    assert R.split_run("full-3-euler") == ("full_euler", 3) and R.split_run("x-euler") == ("x-euler", None)
    # `dvc exp show` has hundreds of columns: keep the params that differ and the chosen metric per run
    frame = pd.DataFrame([{"experiment": "workspace", "rev": "abc", "baseline": "",
                           "params:params.yaml.train.ttur": 5, "params:params.yaml.train.seed": 0,
                           "metrics:results/metrics/full-0/metrics.json.fd_t_toyworld": 3.1,
                           "metrics:results/metrics/full-0/metrics.json.clip_score": 30.0},
                          {"experiment": "exp-1", "rev": "def", "baseline": "workspace",
                           "params:params.yaml.train.ttur": 10, "params:params.yaml.train.seed": 0,
                           "metrics:results/metrics/full-0/metrics.json.fd_t_toyworld": 2.9,
                           "metrics:results/metrics/full-0/metrics.json.clip_score": 30.5}])
    view = R.experiment_view(frame, "fd_t_toyworld")
    assert list(view.columns) == ["experiment", "rev", "baseline", "train.ttur", "full-0 · fd_t_toyworld"]
    assert R.metric_names(frame)[:2] == ["fd_t_toyworld", "clip_score"]


def test_empty_results_show_messages_not_tracebacks(monkeypatch, tmp_path):
    params, _ = synthetic_tree(tmp_path)
    at = run_app(monkeypatch, tmp_path, params, tmp_path / "empty", tmp_path / "no_runs")
    assert not at.exception
    text = " ".join(i.value for i in at.info)
    assert "No results yet" in text and "No dvclive logs" in text and "No generated samples" in text


def test_tables_and_charts_read_as_a_researcher_expects(tmp_path):
    """Distillation metrics first and metrics that never ran collapsed; no heading repeated under the
    dashboard's own; the teacher first and grey in the benchmark bars, with interval error bars; the
    curves with titled axes."""
    from dashboards import charts as C

    params, res, runs = full_tree(tmp_path)
    loc = R.Locations(res, runs, params)
    table = R.load_table(loc)
    order = R.variant_order(loc, table)
    wide = R.wide_table(table, order)
    assert list(wide.columns[:3]) == ["fd_t_toyworld", "clip_score", "clip_diversity"]
    assert "hpsv2" not in wide.columns and wide.notna().any().all()
    assert not R.ablation(loc, table).startswith("#")
    frame = R.geneval_frame(table)
    spec = C.benchmark_chart(frame, order, "score").to_dict()
    scale = spec["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domain"][0] == "teacher" and scale["range"][0] == C.TEACHER_COLOR
    assert len(set(scale["range"])) == len(scale["range"])
    assert spec["layer"][1]["mark"]["type"] == "rule"  # error bars
    curve = C.curve_chart(R.load_curves(loc), "loss_fake_score", order).to_dict()
    assert curve["encoding"]["x"]["title"] == "iteration" and curve["encoding"]["y"]["title"] == "loss_fake_score"


def test_published_numbers_beside_a_paper_family(monkeypatch, tmp_path):
    """A run with train.preset sdxl: the paper's SDXL rows beside the user's, with the reason a value is
    not comparable; the user's table, bests and charts never include the paper's rows."""
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "sdxl", "preset": "sdxl"},
                                      "variants": {"full": {}}, "eval": {"bootstrap": 0}}))
    res = tmp_path / "results"
    (res / "metrics" / "full-0").mkdir(parents=True)
    (res / "metrics" / "full-0" / "metrics.json").write_text(json.dumps({"clip_score": 0.4, "hpsv2": 0.29}))
    (res / "metrics" / "full-0" / "metrics.meta.json").write_text(json.dumps({"n_images": {"clip_score": 384,
                                                                                          "hpsv2": 5000},
                                                                             "protocol": "paper",
                                                                             "features": {"clip_score": "CLIP; cosine scale"}}))
    report_main(["--params", str(params), "--results", str(res), "--out", str(res)])
    loc = R.Locations(res, tmp_path / "runs", params)
    table, published = R.split_published(R.load_table(loc))
    assert not table.variant.str.startswith("published:").any() and len(published) > 50
    assert R.best_cells(table)["clip_score"] == 0.4  # the user's own best, not the paper's
    view = R.published_view(table, published, R.variant_order(loc, table))
    assert list(view.index) == ["clip_score", "hpsv2"]
    assert view.loc["clip_score", "Ours (full)"] == 0.4 and view.loc["clip_score", "senseflow (paper)"] == 0.3248
    assert view.loc["clip_score", "dmd2 (paper)"] == 0.3277
    assert view.loc["clip_score", "not comparable because"] == "N=384 (paper 5000)"
    assert view.loc["hpsv2", "not comparable because"] == ""
    at = run_app(monkeypatch, tmp_path, params, res, tmp_path / "runs")
    assert not at.exception
    shown = [f.value for f in at.dataframe]
    assert any("senseflow (paper)" in f.columns for f in shown)
    assert "published:senseflow" not in shown[0].index  # the variant x metric table is the user's only
    assert any("Not comparable with published values: clip_score (full): N=384 (paper 5000)" in w.value
               for w in at.warning)
    assert any("clip_score is on the cosine scale (the paper's)" in c.value for c in at.caption)
    assert list(R.protocol_warnings(table).metric) == ["clip_score"]
