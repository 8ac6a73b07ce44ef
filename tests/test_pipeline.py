"""The DVC pipeline: stage names fixed by DESIGN.md, one expansion per variant x training seed in
params.yaml (run r = <variant>-<seed>), and the data-flow edges toyworld -> teacher -> teacher_refine
(the pretrained teacher trained further: the teacher every later stage uses) -> distill@r ->
generate@r -> metrics@r (with the teacher's reference samples), distill@r -> geneval@r / compbench@r,
all of them -> report."""
import subprocess

import pytest
import yaml

PARAMS = yaml.safe_load(open("params.yaml"))
VARIANTS = list(PARAMS["variants"])
RUNS = [f"{v}-{seed}" for v in VARIANTS for seed in PARAMS["seeds"]]


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
    assert {"toyworld", "teacher", "teacher_refine", "encoders", "generate_teacher", "report"} <= stages
    assert ("toyworld", "teacher") in edges and ("teacher", "teacher_refine") in edges
    for v in RUNS:
        for name in ("distill", "generate", "metrics", "geneval", "compbench"):
            assert f"{name}@{v}" in stages
        assert ("teacher_refine", f"distill@{v}") in edges and ("encoders", f"distill@{v}") in edges
        assert (f"distill@{v}", f"generate@{v}") in edges
        assert (f"generate@{v}", f"metrics@{v}") in edges and ("generate_teacher", f"metrics@{v}") in edges
        assert (f"distill@{v}", f"geneval@{v}") in edges and (f"distill@{v}", f"compbench@{v}") in edges
        for name in ("metrics", "geneval", "compbench"):
            assert (f"{name}@{v}", "report") in edges


def test_distill_declares_exactly_its_params():
    stage = yaml.safe_load(open("dvc.yaml"))["stages"]["distill"]
    assert stage["matrix"] == {"variant": "${variants}", "seed": "${seeds}"}
    assert stage["params"] == ["train", "variants.${item.variant}"]
    assert "--variant ${item.variant} -S train.seed=${item.seed}" in stage["cmd"]


def test_every_param_a_stage_declares_exists_in_params_yaml():
    """DVC fails after a stage has run (saving dvc.lock) when a declared param is missing."""
    import yaml as _yaml

    stages = _yaml.safe_load(open("dvc.yaml"))["stages"]
    params = _yaml.safe_load(open("params.yaml"))
    missing = []
    for name, stage in stages.items():
        for entry in stage.get("params") or []:
            keys = entry if isinstance(entry, dict) else {entry: None}
            for key in keys:
                if "${" in str(key):
                    continue
                node = params
                for part in str(key).split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}: {key}")
                        break
                    node = node[part]
    assert not missing, missing
