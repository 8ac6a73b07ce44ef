"""`eval.protocol: paper` and declared subsets: the paper's counts, teacher NFE and guidance per family
over params.yaml's values; an official edition (or the paper protocol) refuses a smaller set unless a
subset is declared, and a declared subset is labelled in the outputs and summary.csv; T2I-CompBench's
official per-prompt seeds."""
import json

import pytest
import yaml

from benchmarks.geneval.__main__ import geneval_settings
from benchmarks.geneval.run import official_metadata
from benchmarks.t2i_compbench import run as compbench_run
from benchmarks.t2i_compbench.__main__ import compbench_settings
from benchmarks.t2i_compbench.prompts import official_prompts
from configs.params import ParamsError
from dashboards.report import main as report_main
from evaluate.generate import eval_settings

SHIPPED = yaml.safe_load(open("params.yaml"))


def with_(params: dict, **sections) -> dict:
    out = json.loads(json.dumps(params))
    for dotted, values in sections.items():
        node = out
        for part in dotted.split("__"):
            node = node.setdefault(part, {})
        node.update(values)
    return out


def test_paper_protocol_sets_the_papers_counts_and_teacher_per_family():
    params = with_(SHIPPED, train={"preset": "sd35_large", "family": "sd3"}, eval={"protocol": "paper"})
    cfg = eval_settings(params)  # params.yaml's toy values (fid_prompts 384, teacher 20 steps) are replaced
    assert (cfg["fid_prompts"], cfg["teacher_steps"], cfg["teacher_guidance"], cfg["student_steps"]) == (5000, 40, 3.5, 4)
    assert cfg["prompt_file"] == "data/coco5k/prompts.txt" and cfg["protocol"] == "paper" and cfg["subset"] == {}
    flux = eval_settings(with_(params, train={"preset": "flux", "family": "flux"}))
    assert (flux["teacher_steps"], flux["teacher_guidance"]) == (50, 3.5)  # 50 NFE, guidance-distilled
    sdxl = eval_settings(with_(params, train={"preset": "sdxl", "family": "sdxl"}, eval={"protocol_teacher_guidance": 7.0}))
    assert (sdxl["teacher_steps"], sdxl["teacher_guidance"]) == (40, 7.0)
    ge, cb = geneval_settings(params), compbench_settings(params)
    assert (ge["edition"], ge["images_per_prompt"]) == ("official", 4)
    assert (cb["edition"], cb["prompts_per_category"], cb["images_per_prompt"], cb["seed"]) == ("official", None, 10, 42)
    with pytest.raises(ParamsError, match="needs train.preset sd35_large, flux or sdxl"):
        eval_settings(with_(SHIPPED, eval={"protocol": "paper"}))  # the toy preset has no paper protocol


def test_a_smaller_set_needs_a_declared_subset():
    params = with_(SHIPPED, train={"preset": "sdxl", "family": "sdxl"}, eval={"protocol": "paper"})
    cfg = eval_settings(with_(params, eval__subset={"fid_prompts": 1000}))
    assert cfg["fid_prompts"] == 1000 and cfg["subset"] == {"fid_prompts": 1000}
    with pytest.raises(ParamsError, match="not a subset"):
        eval_settings(with_(params, eval__subset={"fid_prompts": 6000}))
    # the official CompBench edition with the toy counts (16 prompts x 2 images): refused, then labelled
    official = with_(SHIPPED, benchmarks__compbench={"edition": "official", "prompts_per_category": 16,
                                                     "images_per_prompt": 2})
    with pytest.raises(ParamsError, match=r"prompts_per_category: 16 is smaller .*subset: \{prompts_per_category: 16\}"):
        compbench_settings(official)
    cb = compbench_settings(with_(official, benchmarks__compbench__subset={"prompts_per_category": 16,
                                                                          "images_per_prompt": 2}))
    assert cb["subset"] == {"prompts_per_category": 16, "images_per_prompt": 2}
    # the shipped params (counts null) and the schema defaults: the official edition runs its full set
    for params in (with_(SHIPPED, benchmarks__compbench={"edition": "official"}),
                   {"benchmarks": {"compbench": {"edition": "official"}}}):
        full = compbench_settings(params)
        assert full["subset"] == {} and full["prompts_per_category"] is None
        assert compbench_run.images_per_prompt(full) == 10


def test_geneval_official_subset_of_prompts(tmp_path):
    cfg = geneval_settings({"benchmarks": {"geneval": {"edition": "official", "subset": {"prompts": 2}}}})
    metas = official_metadata(cfg)
    assert len(metas) == 12 and {m["tag"] for m in metas} == {"single_object", "two_object", "counting", "colors",
                                                              "position", "color_attr"}
    assert len(official_metadata(geneval_settings({"benchmarks": {"geneval": {"edition": "official"}}}))) == 553
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(m) + "\n" for m in metas))
    with pytest.raises(ParamsError, match="has 12 prompts, the official set 553"):
        official_metadata(geneval_settings({"benchmarks": {"geneval": {"edition": "official",
                                                                       "metadata": str(short)}}}))
    with pytest.raises(ParamsError, match="images_per_prompt: 1 is smaller"):
        geneval_settings({"benchmarks": {"geneval": {"edition": "official", "images_per_prompt": 1}}})


def test_compbench_official_seeds_are_42_to_51_for_every_prompt(tmp_path, monkeypatch):
    captured = []
    monkeypatch.setattr(compbench_run, "render_missing", lambda gen, jobs, batch, desc: captured.extend(jobs))
    prompts = official_prompts("color", limit=2)
    plan = compbench_run.image_plan(prompts, 10)
    compbench_run.generate_images(None, {"seed": 42, "batch_size": 4}, plan, tmp_path / "images", {"x": 1})
    seeds = [seed for _, _, seed in captured]
    assert seeds == list(range(42, 52)) * 2
    names = [path.name for path, _, _ in captured]
    assert names[10] == f"{prompts[1].prompt}_000010.png"  # the file counter runs over the category


def test_a_declared_subset_is_labelled_in_summary_csv(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "toy", "preset": "toy"}, "variants": {"full": {}},
                                      "eval": {"bootstrap": 0}}))
    res = tmp_path / "results" / "metrics" / "full-0"
    res.mkdir(parents=True)
    (res / "metrics.json").write_text(json.dumps({"clip_score": 0.3, "flags": {}}))
    (res / "metrics.meta.json").write_text(json.dumps({"n_images": {"clip_score": 100},
                                                       "subset": {"fid_prompts": 100}}))
    report_main(["--params", str(params), "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    row = table[(table.variant == "full") & (table.metric == "clip_score")].iloc[0]
    assert row.protocol_warning == "subset: fid_prompts=100"
    assert "flags" not in set(table.metric)


def test_paper_protocol_generates_from_coco5k_and_says_what_it_replaced(tmp_path, capsys):
    """COCO-5K has exactly 5,000 prompts: the diversity prompts are its first ones again (not an error);
    the params.yaml values the protocol replaces are listed on stderr."""
    from evaluate.generate import prompt_plan

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"caption {i}\n" for i in range(5000)))
    cfg = eval_settings(with_(SHIPPED, train={"preset": "flux", "family": "flux"},
                              eval={"protocol": "paper", "prompt_file": str(prompts)}))
    assert cfg["prompt_file"] == "data/coco5k/prompts.txt"  # the protocol's file; here a stand-in of its size
    cfg["prompt_file"] = str(prompts)
    rows = prompt_plan(cfg)
    fid = [r for r in rows if r["group"] == "fid"]
    div = [r for r in rows if r["group"] == "diversity"]
    assert len(fid) == 5000 and len(div) == 8 * 16
    assert div[0]["prompt"] == "caption 0" and div[0]["prompt_index"] == 5000
    with pytest.raises(ParamsError, match="too short"):  # a custom protocol keeps the strict rule
        prompt_plan({**cfg, "diversity_reuse": False})


def test_paper_protocol_lists_the_values_it_replaces(capsys):
    eval_settings(with_(SHIPPED, train={"preset": "sd35_large", "family": "sd3"}, eval={"protocol": "paper"}))
    err = capsys.readouterr().err
    assert "eval.protocol: paper replaces eval's" in err and "fid_prompts=384" in err and "teacher_steps=20" in err
