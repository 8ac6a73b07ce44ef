"""The DVC pipeline: stage names fixed by DESIGN.md, one expansion per variant in params.yaml, and
the data-flow edges toyworld -> teacher -> distill@v -> generate@v -> metrics@v (with the teacher's
reference samples), distill@v -> geneval@v / compbench@v, all of them -> report."""
import subprocess

import pytest
import yaml

VARIANTS = list(yaml.safe_load(open("params.yaml"))["variants"])


@pytest.fixture(scope="module")
def edges() -> set[tuple[str, str]]:
    dot = subprocess.run(["dvc", "dag", "--dot"], capture_output=True, text=True, check=True).stdout
    out = set()
    for line in dot.splitlines():
        if "->" in line:
            a, b = (x.strip().strip(";").strip('"') for x in line.split("->"))
            out.add((a, b))
    return out


def test_default_variants_are_the_paper_ablation():
    assert {"full", "wo_isg", "wo_ida", "wo_both", "wo_vfm"} <= set(VARIANTS)


def test_every_stage_and_edge(edges):
    stages = {s for e in edges for s in e}
    assert {"toyworld", "teacher", "encoders", "generate_teacher", "report"} <= stages
    assert ("toyworld", "teacher") in edges
    for v in VARIANTS:
        for name in ("distill", "generate", "metrics", "geneval", "compbench"):
            assert f"{name}@{v}" in stages
        assert ("teacher", f"distill@{v}") in edges and ("encoders", f"distill@{v}") in edges
        assert (f"distill@{v}", f"generate@{v}") in edges
        assert (f"generate@{v}", f"metrics@{v}") in edges and ("generate_teacher", f"metrics@{v}") in edges
        assert (f"distill@{v}", f"geneval@{v}") in edges and (f"distill@{v}", f"compbench@{v}") in edges
        for name in ("metrics", "geneval", "compbench"):
            assert (f"{name}@{v}", "report") in edges


def test_distill_declares_exactly_its_params():
    stage = yaml.safe_load(open("dvc.yaml"))["stages"]["distill"]["do"]
    assert stage["params"] == ["train", "variants.${key}"]
    assert "--variant ${key}" in stage["cmd"]
