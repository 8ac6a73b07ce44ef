"""`report` stage on a synthetic results tree: one row per variant x metric, skipped reasons kept,
missing variants reported as "not run", best values bolded in the right direction."""
import json

import pandas as pd
import yaml

from dashboards.report import COMPBENCH, GENEVAL, METRICS, main


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def synthetic_tree(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "toy"}, "eval": {"seed": 3},
                                      "variants": {"full": {}, "wo_isg": {"isg": False}, "wo_ida": {"ida": False}}}))
    res = tmp_path / "results"
    for v, fd, clip in (("full", 5.0, 30.0), ("wo_isg", 7.0, 31.0)):
        values = {m: None for m in METRICS}
        values.update(fd_t_toyworld=fd, clip_score=clip, clip_diversity=0.2)
        write(res / "metrics" / f"{v}-0" / "metrics.json", values)
        write(res / "metrics" / f"{v}-0" / "metrics.meta.json", {
            "skipped": {m: f"no weights for {m}" for m in METRICS if values[m] is None},
            "n_images": {m: 96 for m in METRICS}})
        write(res / "geneval" / f"{v}-0" / "summary.json", {m: 0.5 + (v == "full") * 0.1 for m in GENEVAL})
    write(res / "geneval" / "teacher" / "summary.json", {m: 0.7 for m in GENEVAL})
    write(res / "geneval" / "teacher_few" / "summary.json", {m: 0.45 for m in GENEVAL})
    write(res / "compbench" / "full-0" / "summary.json", {m: 0.4 for m in COMPBENCH})
    return params, res


def test_long_table_has_every_variant_and_metric(tmp_path):
    params, res = synthetic_tree(tmp_path)
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(table.columns)[:5] == ["variant", "family", "metric", "value", "n_images"]
    for v in ("full", "wo_isg", "wo_ida"):
        got = set(table[table.variant == v].metric)
        assert set(METRICS) | set(GENEVAL) | set(COMPBENCH) <= got
        assert not table[table.variant == v].duplicated("metric").any()
    row = table[(table.variant == "full") & (table.metric == "hpsv2")].iloc[0]
    assert pd.isna(row.value) and row.reason == "no weights for hpsv2"
    row = table[(table.variant == "full") & (table.metric == "fd_t_toyworld")].iloc[0]
    assert row.value == 5.0 and row.n_images == 96 and row.seed == 0 and row.family == "toy"
    assert set(table[table.variant == "wo_ida"].reason) == {"not run"}
    assert set(table[(table.variant == "wo_isg") & table.metric.isin(COMPBENCH)].reason) == {"not run"}
    teacher = table[table.variant == "teacher"]
    assert set(teacher.metric) == set(GENEVAL)  # the teacher only has the benchmark rows it ran
    few = table[table.variant == "teacher_few"]  # the teacher at the student's step count, beside it
    assert set(few.metric) == set(GENEVAL) and set(few.value) == {0.45} and few.p_vs_full.isna().all()


def test_ablation_marks_best_in_the_right_direction(tmp_path):
    params, res = synthetic_tree(tmp_path)
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "ablation.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert "FD-T (ToyWorld features)" in rows["Method"]
    assert "**5.0000**" in rows["Ours (full)"] and "7.0000" in rows["w/o ISG"] and "**7" not in rows["w/o ISG"]
    assert "**31.00**" in rows["w/o ISG"]  # CLIP: higher is better
    assert "`hpsv2`" in md and "no weights for hpsv2" in md and "not run" in md
    bench = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "| Teacher |" in bench and "single_object" in bench
    few = next(line for line in bench.splitlines() if line.startswith("| Teacher (few-step Euler) |"))
    assert "0.4500" in few and "**" not in few  # never the best value: it is not a distilled variant
    assert bench.count("| Teacher (few-step Euler) |") == 1  # no empty T2I-CompBench row: it ran GenEval only


def test_empty_results_do_not_crash(tmp_path):
    params, _ = synthetic_tree(tmp_path)
    table = main(["--params", str(params), "--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert table.value.notna().sum() == 0 and set(table.reason) == {"not run"}
    assert (tmp_path / "out" / "ablation.md").read_text().startswith("# Ablation")


def test_ablation_includes_the_ttur_sweep_where_it_ran(tmp_path):
    params, res = synthetic_tree(tmp_path)
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "a")])
    assert "TTUR" not in (tmp_path / "a" / "ablation.md").read_text()
    (res / "ttur").mkdir()
    (res / "ttur" / "sweep.md").write_text("# TTUR with and without IDA (paper Fig. 3 shape)\n\n| TTUR | IDA |\n")
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "b")])
    md = (tmp_path / "b" / "ablation.md").read_text()
    assert "\n## TTUR with and without IDA (paper Fig. 3 shape)" in md and md.index("TTUR") > md.index("# Ablation")


def test_euler_rows_of_the_paper_sit_under_their_variant(tmp_path):
    """params `euler_variants`: the stages' `<run>-euler` folders become rows `<variant>_euler`, "Ours
    (full, Euler)" under "Ours (full)" in the ablation and benchmark tables where they ran, never bold."""
    params, res = synthetic_tree(tmp_path)
    config = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**config, "euler_variants": ["full"]}))
    values = {m: None for m in METRICS}
    values.update(fd_t_toyworld=4.0, clip_score=31.0)  # better FD than every ablation row, CLIP tied: never bold
    write(res / "metrics" / "full-0-euler" / "metrics.json", values)
    write(res / "geneval" / "full-0-euler" / "summary.json", {m: 0.65 for m in GENEVAL})
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    euler = table[table.variant == "full_euler"]
    assert set(euler.metric) >= set(METRICS) | set(GENEVAL)
    assert euler[euler.metric == "fd_t_toyworld"].value.item() == 4.0 and euler.seed.dropna().unique().tolist() == [0]
    assert euler[euler.metric == "geneval_overall"].value.item() == 0.65
    assert set(euler[euler.metric.isin(COMPBENCH)].reason) == {"not run"}
    for name in ("ablation.md", "benchmarks.md"):
        md = (tmp_path / "out" / name).read_text().split("## T2I-CompBench")[0]
        labels = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "---" not in line]
        assert labels[labels.index("Ours (full)") + 1] == "Ours (full, Euler)", name
    ablation = (tmp_path / "out" / "ablation.md").read_text()
    assert "**5.0000**" in ablation and "**4.0000**" not in ablation  # full's FD is the bold one
    euler_line = next(line for line in ablation.splitlines() if line.startswith("| Ours (full, Euler)"))
    assert "**" not in euler_line  # not even where it ties the best ablation row (CLIP 31.0)
    compbench = (tmp_path / "out" / "benchmarks.md").read_text().split("## T2I-CompBench")[1]
    assert "Ours (full, Euler)" not in compbench  # a benchmark it did not run: no empty row

    config = yaml.safe_load(params.read_text())
    config["euler_variants"] = []
    params.write_text(yaml.safe_dump(config))
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "none")])
    assert "full_euler" not in set(pd.read_csv(tmp_path / "none" / "summary.csv").variant)


def write_geneval_results(folder, correct: dict[str, list[bool]]):
    """A GenEval results.jsonl: per task, one prompt folder per entry of `correct` (one image each)."""
    rows, index = [], 0
    for tag, flags in correct.items():
        for flag in flags:
            rows.append({"filename": f"{folder}/images/{index:05}/samples/00000.png", "tag": tag, "correct": flag})
            index += 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_students_are_compared_with_the_teacher_and_its_few_step_samples(tmp_path):
    """benchmarks.md pairs every student run's GenEval with the teacher's and the few-step teacher's on the
    same prompts: difference, bootstrap interval, p; a student with other prompts is not paired."""
    params, res = synthetic_tree(tmp_path)
    tasks = ["single_object", "two_object"]
    write_geneval_results(res / "geneval" / "teacher", {t: [True] * 20 for t in tasks})
    write_geneval_results(res / "geneval" / "teacher_few", {t: [False] * 20 for t in tasks})
    write_geneval_results(res / "geneval" / "full-0", {t: [True] * 10 + [False] * 10 for t in tasks})
    write_geneval_results(res / "geneval" / "wo_isg-0", {t: [True] * 5 for t in tasks})  # other prompts
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "benchmarks.md").read_text().split("## Distillation against the teacher")[1]
    cells = next(line for line in md.splitlines() if "`full-0`" in line).split("|")[2:4]
    (low, high), (low_few, high_few) = [[float(x) for x in c.split("[")[1].split("]")[0].split(",")] for c in cells]
    assert cells[0].strip().startswith("-0.500") and low < -0.5 < high < 0 and "(p 0.005)" in cells[0]
    assert cells[1].strip().startswith("+0.500") and 0 < low_few < 0.5 < high_few
    assert "not paired" in next(line for line in md.splitlines() if "`wo_isg-0`" in line)
