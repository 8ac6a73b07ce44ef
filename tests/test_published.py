"""The paper's published numbers next to a user's: the shipped table of Tab. 1, 2, 4, 5, the
`published:<method>` rows of the report for a paper family (none for ToyWorld), and the warning on
a user's value computed under another protocol (N, subset, detector)."""
import json

import pandas as pd
import yaml

from dashboards.report import main
from protocols.published import PAPER_FAMILIES, TABLE_ORDER, load_published, protocol_warning, published_rows


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_shipped_table_is_complete_and_well_formed():
    table = load_published()
    assert set(table.table) == set(TABLE_ORDER) and set(table.family) == set(PAPER_FAMILIES)
    assert not table.duplicated(["table", "row", "metric"]).any()
    # every method of Tab. 1 has its six columns (teachers and FLUX.1-schnell: no Patch FID-T, printed "–")
    tab1 = table[table.table == "Tab. 1"]
    counts = tab1.groupby(["family", "row"]).size()
    assert counts.max() == 6 and counts.min() == 5 and len(counts) == 19
    # fractions are fractions (Tab. 4's percentages converted), scores in their published ranges
    bench = table[table.metric.str.startswith(("geneval", "compbench"))]
    assert bench.value.between(0, 1).all()
    assert table[table.metric == "clip_score"].value.between(0.3, 0.34).all()  # cosine, not x 100
    assert table[table.metric == "pickscore"].value.between(20, 24).all()
    # spot checks against the paper (Tab. 1, 2, 4, 5)
    cell = table.set_index(["table", "family", "method", "metric"]).value
    assert cell[("Tab. 1", "sd35_large", "senseflow_euler", "geneval_overall")] == 0.7098
    assert cell[("Tab. 2", "sd35_large", "senseflow_wo_both", "fid_t")] == 43.84
    assert cell[("Tab. 4", "flux", "senseflow", "geneval_counting")] == 0.825
    assert cell[("Tab. 5", "sdxl", "dmd2", "compbench_complex")] == 0.3597


def test_summary_rows_take_the_first_table_and_cite_the_others():
    assert published_rows("toy") == [] and published_rows(None) == []
    rows = {(r["variant"], r["metric"]): r for r in published_rows("sd35_large")}
    hps = rows[("published:senseflow", "hpsv2")]
    assert hps["value"] == 0.3016 and hps["source"].startswith("Tab. 1, row 'Ours-SD 3.5' (4 NFE, stochastic sampler)")
    assert "Tab. 2: 0.3015" in hps["source"]  # the same cell printed differently in Tab. 2
    assert rows[("published:senseflow", "fid_t")]["value"] == 13.38
    assert rows[("published:teacher", "geneval_position")]["n_images"] == 553 * 4
    assert rows[("published:senseflow", "clip_score")]["n_images"] == 5000
    assert not any(r["family"] != "sd35_large" for r in rows.values())


def test_protocol_warning_names_what_differs():
    assert protocol_warning("fid_t", 5000) == ""
    assert protocol_warning("fid_t", 384) == "N=384 (paper 5000)"
    text = protocol_warning("geneval_position", 384, subset="subset: 63 of 553 prompts", tool="detector: DETR")
    assert text == "N=384 (paper 2212); subset: 63 of 553 prompts; detector: DETR"
    assert protocol_warning("fd_t_toyworld", 10) == ""  # no published counterpart


def test_report_puts_published_rows_beside_a_paper_family(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "sdxl", "preset": "sdxl"},
                                      "variants": {"full": {}}, "eval": {"bootstrap": 0}}))
    res = tmp_path / "results"
    write(res / "metrics" / "full-0" / "metrics.json", {"clip_score": 0.321, "hpsv2": 0.29})
    write(res / "metrics" / "full-0" / "metrics.meta.json", {"n_images": {"clip_score": 5000, "hpsv2": 384},
                                                            "protocol": "paper"})
    write(res / "geneval" / "full-0" / "summary.json", {"geneval_overall": 0.5, "n_images": 252, "n_prompts": 63,
                                                        "edition": "official",
                                                        "detector": "facebook/detr-resnet-50 (transformers)"})
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    mine = table[table.variant == "full"].set_index("metric")
    assert mine.loc["clip_score", "family"] == "sdxl"
    assert pd.isna(mine.loc["clip_score", "protocol_warning"])  # the paper's N: nothing differs that is known
    assert mine.loc["hpsv2", "protocol_warning"] == "N=384 (paper 5000)"
    assert mine.loc["geneval_overall", "protocol_warning"] == (
        "N=252 (paper 2212); subset: 63 of 553 prompts; detector: facebook/detr-resnet-50 (transformers)")
    # the same values under eval.protocol: custom and on the torchmetrics scale say so
    write(res / "metrics" / "full-0" / "metrics.meta.json", {"n_images": {"clip_score": 5000}, "protocol": "custom",
                                                            "clip_score_scale": "torchmetrics"})
    main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out2")])
    other = pd.read_csv(tmp_path / "out2" / "summary.csv").set_index(["variant", "metric"])
    assert other.loc[("full", "clip_score"), "protocol_warning"] == (
        "eval.protocol custom (not the paper's prompts, N and teacher reference); 100 x cosine scale (the paper "
        "reports cosine)")
    paper = table[table.variant.str.startswith("published:")]
    assert set(paper.family) == {"sdxl"} and not paper.duplicated(["variant", "metric"]).any()
    row = paper[(paper.variant == "published:senseflow") & (paper.metric == "clip_score")].iloc[0]
    assert row.value == 0.3248 and row.n_images == 5000 and row.source.startswith("Tab. 1")
    md = (tmp_path / "out" / "ablation.md").read_text()
    section = md.split("## Published numbers (SenseFlow paper)")[1]
    assert "| senseflow (paper) |" in section and "0.3248" in section and "†" in section
    assert "N=384 (paper 5000)" in section


def test_toy_report_has_no_published_rows(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "toy", "preset": "toy"}, "variants": {"full": {}}}))
    main(["--params", str(params), "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert not table.variant.str.startswith("published:").any()
    assert "publishes no numbers for `toy`" in (tmp_path / "out" / "ablation.md").read_text()
