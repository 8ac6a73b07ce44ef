"""The error convention of every command (configs/cli.py): a problem the user can fix prints one line
`error: <what> (<key or path>): <how to fix>` on stderr and exits with status 2, with no traceback
unless --debug, and nothing is written or damaged. Each case goes through the real command line in a
fresh process, from the repository root, as a user would type it."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("results", "runs", "models")  # repository folders a failed command must leave untouched


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def errors(proc) -> list[str]:
    """stderr lines that are ours (library import chatter such as torchao's warnings filtered)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under roots with its size and modification time."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                st = path.lstat()
                seen[str(path)] = (st.st_size, st.st_mtime_ns)
    return seen


def params_with(root: Path, name: str, edits: dict) -> Path:
    """The shipped params.yaml with dotted-key edits (a value of ... deletes the key)."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in edits.items():
        node, *path = [data, *dotted.split(".")]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    out = root / f"{name}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def sample_folder(folder: Path, prompts: list[str], size: int = 8, broken: int | None = None) -> Path:
    """A samples folder as evaluate.generate writes it (tiny images); image `broken` is truncated."""
    rows = []
    for i, prompt in enumerate(prompts):
        (folder / str(i)).mkdir(parents=True)
        Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(folder / str(i) / "0.png")
        rows.append({"prompt_index": i, "k": 0, "prompt": prompt, "seed": i, "group": "fid"})
    if broken is not None:
        path = folder / str(broken) / "0.png"
        path.write_bytes(path.read_bytes()[:20])
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("not a folder\n")
    (root / "broken.yaml").write_text("train: {ttur: [1, 2\n")
    (root / "list.yaml").write_text("- train\n- eval\n")
    (root / "typo.yaml").write_text((ROOT / "params.yaml").read_text().replace("\ntrain:", "\ntrian:"))
    (root / "latin1.txt").write_bytes("une licorne rouge, caf\xe9\n".encode("latin-1"))
    (root / "empty.txt").write_text("\n  \n")
    (root / "short.txt").write_text("a red cube\n")
    (root / "not_json.json").write_text("{not json")
    (root / "no_prompts.json").write_text('{"keys": [], "image_paths": []}')
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "image.png")
    (root / "dataset.json").write_text(json.dumps({"keys": ["0"], "image_paths": [str(root / "image.png")],
                                                   "prompts": ["a red cube"]}))
    params_with(root, "latin1_params", {"eval.prompt_file": str(root / "latin1.txt")})
    params_with(root, "empty_prompts", {"eval.prompt_file": str(root / "empty.txt")})
    params_with(root, "short_prompts", {"eval.prompt_file": str(root / "short.txt")})
    params_with(root, "lr_text", {"train.lr_generator": "abc"})
    params_with(root, "steps_text", {"train.steps": "many"})
    params_with(root, "negative_count", {"eval.diversity_prompts": -3})
    params_with(root, "zero_fid", {"eval.fid_prompts": 0})
    params_with(root, "sampler_typo", {"eval.student_sampler": "stochastc"})
    params_with(root, "metric_typo", {"eval.metrics": ["fid_tt"]})
    params_with(root, "eval_key_typo", {"eval.fid_prompt": 100})
    params_with(root, "variant_key_typo", {"variants.wo_isg": {"isgg": False}})
    params_with(root, "edition_typo", {"benchmarks.compbench.edition": "offical"})
    params_with(root, "geneval_images_zero", {"benchmarks.geneval.images_per_prompt": 0})
    params_with(root, "task_typo", {"toyworld.task_weights": {"postion": 3.0}})
    params_with(root, "models_typo", {"models.inceptoin": "/x.pt"})
    params_with(root, "teacher_float_layers", {"teacher.layers": 2.5})
    params_with(root, "guidance_pair", {"train.real_guidance": [5, 2]})
    sample_folder(root / "samples", ["a red cube", "a blue ball"])
    sample_folder(root / "reference", ["a red cube", "a blue ball"])
    sample_folder(root / "other_reference", ["a red cube", "a green cone"])
    sample_folder(root / "broken_samples", ["a red cube", "a blue ball"], broken=1)
    return root


# name: (command line, a fragment the one error line must contain: the bad key or path and the problem)
CASES = {
    # params.yaml, as a whole (any command)
    "missing params file": (["train.senseflow", "--params", "{bad}/nope.yaml"], "params file not found ({bad}/nope.yaml)"),
    "params not YAML": (["train.senseflow", "--params", "{bad}/broken.yaml"], "not valid YAML ({bad}/broken.yaml)"),
    "params not a mapping": (["evaluate.generate", "--params", "{bad}/list.yaml", "--out", "{bad}/gen"],
                             "not a mapping of sections ({bad}/list.yaml)"),
    "section typo": (["train.senseflow", "--params", "{bad}/typo.yaml"], "unknown section 'trian' (did you mean 'train'?)"),
    "text for a number": (["train.senseflow", "--params", "{bad}/lr_text.yaml"],
                          "train.lr_generator): need a number >= 0.0, got 'abc'"),
    "text for a count": (["train.senseflow", "--params", "{bad}/steps_text.yaml"],
                         "train.steps): need an integer >= 1, got 'many'"),
    "variant key typo": (["train.senseflow", "--params", "{bad}/variant_key_typo.yaml", "--variant", "wo_isg"],
                         "variants.wo_isg.isgg): unknown key (did you mean 'isg'?)"),
    "guidance range reversed": (["train.senseflow", "--params", "{bad}/guidance_pair.yaml"],
                                "train.real_guidance): need [lo, hi] with lo <= hi"),
    "models key typo": (["evaluate.metrics", "--params", "{bad}/models_typo.yaml", "--samples", "{bad}/samples",
                         "--reference", "{bad}/reference", "--out", "{bad}/m"],
                        "models.inceptoin): unknown key (did you mean 'inception'?)"),
    "teacher layers not whole": (["train.teacher", "--params", "{bad}/teacher_float_layers.yaml", "--out", "{bad}/t",
                                  "--work", "{bad}/tw", "--results", "{bad}/tr"],
                                 "teacher.layers): need an integer >= 1, got 2.5"),
    "toy task typo": (["toyworld.build", "--params", "{bad}/task_typo.yaml", "--out", "{bad}/tw", "--results",
                       "{bad}/tr"], "toyworld.task_weights): unknown name(s) ['postion'] (did you mean 'position'"),
    # training
    "unknown train key": (["train.senseflow", "-S", "train.bogus=1"], "(-S: train.bogus): unknown key"),
    "bad choice": (["train.senseflow", "-S", "train.precision=fp16"], "train.precision): need one of 'fp32', 'bf16', got 'fp16'"),
    "negative iterations": (["train.senseflow", "-S", "train.steps=-5"], "train.steps): need an integer >= 1, got -5"),
    "not a boolean": (["train.senseflow", "-S", "ida=maybe"], "train.ida): need true or false, got 'maybe'"),
    "override without =": (["train.senseflow", "-S", "ttur"], "override 'ttur' is not key=value"),
    "unknown variant": (["train.senseflow", "--variant", "wo_everything"], "variant 'wo_everything'"),
    "unknown flag": (["train.senseflow", "--stepz", "3"], "unrecognized arguments: --stepz 3"),
    "missing dataset": (["train.senseflow", "-S", "dataset={bad}/none.json", "--out", "{bad}/run"],
                        "dataset JSON does not exist (train.dataset: {bad}/none.json)"),
    "dataset not JSON": (["train.senseflow", "-S", "dataset={bad}/not_json.json", "--out", "{bad}/run"],
                         "(train.dataset: {bad}/not_json.json)"),
    "dataset lacks prompts": (["train.senseflow", "-S", "dataset={bad}/no_prompts.json", "--out", "{bad}/run"],
                              "lacks ['prompts'] (train.dataset: {bad}/no_prompts.json)"),
    "missing teacher": (["train.senseflow", "-S", "dataset={bad}/dataset.json", "-S", "teacher={bad}/no_teacher",
                         "--out", "{bad}/run"],
                        "the teacher folder does not exist (train.teacher: {bad}/no_teacher)"),
    "along-training CLIP missing": (["train.senseflow", "-S", "dataset={bad}/dataset.json", "-S",
                                     "eval_clip={bad}/no_clip", "--out", "{bad}/run"],
                                    "does not exist (train.eval_clip: {bad}/no_clip)"),
    "checkpoint eval without a run": (["evaluate.checkpoints", "{bad}", "--out", "{bad}/ce.jsonl"],
                                      "no checkpoint in {bad}/checkpoints (RUN)"),
    "run folder under a file": (["train.senseflow", "--out", "{bad}/a_file/run"],
                                "the run folder cannot be created under a file (--out: {bad}/a_file/run)"),
    "cpu offload on CPU": (["train.senseflow", "-S", "dataset={bad}/dataset.json", "-S", "fsdp=true", "-S",
                            "cpu_offload=true", "--out", "{bad}/run"], "needs CUDA GPUs (train.cpu_offload)"),
    "not a checkpoint": (["train.export_checkpoint", "{bad}/no_checkpoint"], "not a readable checkpoint"),
    "teacher zero steps": (["train.teacher", "--steps", "0", "--out", "{bad}/t"], "argument --steps: need an integer >= 1"),
    # generation
    "unknown family": (["evaluate.generate", "--family", "nope", "--out", "{bad}/gen"], "unknown model family 'nope'"),
    "prompt file not UTF-8": (["evaluate.generate", "--params", "{bad}/latin1_params.yaml", "--out", "{bad}/gen"],
                              "not UTF-8 text (eval.prompt_file: {bad}/latin1.txt)"),
    "prompt file empty": (["evaluate.generate", "--params", "{bad}/empty_prompts.yaml", "--out", "{bad}/gen"],
                          "no non-empty line (eval.prompt_file: {bad}/empty.txt)"),
    "prompt file too short": (["evaluate.generate", "--params", "{bad}/short_prompts.yaml", "--out", "{bad}/gen"],
                              "too short (eval.prompt_file: {bad}/short.txt)"),
    "negative eval count": (["evaluate.generate", "--params", "{bad}/negative_count.yaml", "--out", "{bad}/gen"],
                            "eval.diversity_prompts): need an integer >= 0, got -3"),
    "zero eval count": (["evaluate.generate", "--params", "{bad}/zero_fid.yaml", "--out", "{bad}/gen"],
                        "eval.fid_prompts): need an integer >= 1, got 0"),
    "sampler typo": (["evaluate.generate", "--params", "{bad}/sampler_typo.yaml", "--out", "{bad}/gen"],
                     "eval.student_sampler): need one of 'stochastic', 'euler', got 'stochastc' (did you mean 'stochastic'?)"),
    "eval key typo": (["evaluate.generate", "--params", "{bad}/eval_key_typo.yaml", "--out", "{bad}/gen"],
                      "eval.fid_prompt): unknown key (did you mean 'fid_prompts'?)"),
    "generation teacher missing": (["evaluate.generate", "--teacher", "{bad}/no_teacher", "--out", "{bad}/gen"],
                                   "the teacher folder does not exist (--teacher: {bad}/no_teacher)"),
    "generation student missing": (["evaluate.generate", "--student", "{bad}/no_student", "--out", "{bad}/gen"],
                                   "the student folder does not exist (--student: {bad}/no_student)"),
    "sample folder under a file": (["evaluate.generate", "--out", "{bad}/a_file/gen"],
                                   "the sample folder cannot be created under a file (--out: {bad}/a_file/gen)"),
    # metrics
    "metric name typo": (["evaluate.metrics", "--params", "{bad}/metric_typo.yaml", "--samples", "{bad}/samples",
                          "--reference", "{bad}/reference", "--out", "{bad}/m"],
                         "eval.metrics): entry 0: need one of"),
    "missing samples": (["evaluate.metrics", "--samples", "{bad}/s", "--reference", "{bad}/r", "--out", "{bad}/m"],
                        "samples folder"),
    "broken image": (["evaluate.metrics", "--samples", "{bad}/broken_samples", "--reference", "{bad}/reference",
                      "--out", "{bad}/m"], "unreadable image ({bad}/broken_samples/1/0.png)"),
    "samples not aligned": (["evaluate.metrics", "--samples", "{bad}/samples", "--reference", "{bad}/other_reference",
                             "--out", "{bad}/m"], "do not hold the same prompts and seeds"),
    "metrics folder under a file": (["evaluate.metrics", "--samples", "{bad}/samples", "--reference", "{bad}/reference",
                                     "--out", "{bad}/a_file/m"],
                                    "the metrics folder cannot be created under a file (--out: {bad}/a_file/m)"),
    # benchmarks
    "missing geneval images": (["benchmarks.geneval", "--score-only", "{bad}/none", "--out", "{bad}/g"],
                               "GenEval image folder"),
    "toy geneval on a real family": (["benchmarks.geneval", "--family", "sd3", "--out", "{bad}/g"],
                                     "(benchmarks.geneval.edition, --family sd3)"),
    "geneval zero images": (["benchmarks.geneval", "--params", "{bad}/geneval_images_zero.yaml", "--out", "{bad}/g"],
                            "benchmarks.geneval.images_per_prompt): need an integer >= 1, got 0"),
    "compbench edition typo": (["benchmarks.t2i_compbench", "--params", "{bad}/edition_typo.yaml", "--out", "{bad}/c"],
                               "benchmarks.compbench.edition): need one of 'toy', 'official', got 'offical' (did you mean 'official'?)"),
    "compbench output under a file": (["benchmarks.t2i_compbench", "--out", "{bad}/a_file/c"],
                                      "(--out: {bad}/a_file/c)"),
    "metric benchmark zero images": (["evaluate.bench_metrics", "--images", "0", "--out", "{bad}/b.json"],
                                     "argument --images: need an integer >= 2, got '0'"),
    "sampling benchmark negative rounds": (["evaluate.bench_sampling", "--rounds", "-1", "--out", "{bad}/b.json"],
                                           "argument --rounds: need an integer >= 1, got '-1'"),
    "benchmark result under a file": (["evaluate.bench_sampling", "--out", "{bad}/a_file/b.json"],
                                      "(--out: {bad}/a_file/b.json)"),
    "planner zero GPUs": (["train.plan", "--preset", "sd35_large", "--gpus", "0"], "argument --gpus: need an integer >= 1"),
    "no GPU": (["train.gpu_check", "--out", "{bad}/gpu.json"], "needs CUDA GPUs"),
    # report
    "report on typo params": (["dashboards.report", "--params", "{bad}/typo.yaml", "--out", "{bad}/rep"],
                              "unknown section"),
    "report results is a file": (["dashboards.report", "--results", "{bad}/a_file", "--out", "{bad}/rep"],
                                 "the results folder is a file (--results: {bad}/a_file)"),
    "report folder under a file": (["dashboards.report", "--out", "{bad}/a_file/rep"],
                                   "the report folder cannot be created under a file (--out: {bad}/a_file/rep)"),
    # dashboard
    "dashboard results is a file": (["dashboards", "--results", "{bad}/a_file"], "--results is not a folder ({bad}/a_file)"),
    "dashboard params is a folder": (["dashboards", "--params", "{bad}/samples"], "--params is not a file ({bad}/samples)"),
    "dashboard port out of range": (["dashboards", "--port", "70000"], "port out of range (--port 70000)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_errors_are_one_line_with_status_2(bad, name):
    args, expected = CASES[name]
    before = snapshot(bad, *(ROOT / w for w in WATCHED))
    proc = run(*[a.format(bad=bad) for a in args])
    assert proc.returncode == 2, (name, proc.stdout[-500:], proc.stderr[-2000:])
    lines = errors(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr[-2000:])
    assert expected.format(bad=bad) in lines[0], (name, lines[0])
    assert "Traceback" not in proc.stderr
    assert snapshot(bad, *(ROOT / w for w in WATCHED)) == before, f"{name}: something was written or changed"


def test_dashboard_port_in_use(bad):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run("dashboards", "--port", str(port))
    assert proc.returncode == 2 and errors(proc) == [f"error: port {port} is in use (--port): stop the other server "
                                                      f"or pass --port N"], proc.stderr


def test_dashboard_launcher_binds_localhost_from_any_folder(tmp_path):
    """`python <repository>/dashboards` from another folder passes the address itself (streamlit would
    not find .streamlit/config.toml there); --share is the only way to every interface."""
    launch = [sys.executable, str(ROOT / "dashboards"), "--print-command", "--port", "8765"]
    cmd = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout.split()
    assert cmd[cmd.index("--server.address") + 1] == "localhost" and str(ROOT / "dashboards" / "app.py") in cmd
    shared = subprocess.run(launch + ["--share"], cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout.split()
    assert shared[shared.index("--server.address") + 1] == "0.0.0.0"


def test_debug_shows_the_traceback(bad):
    proc = run("train.senseflow", "--params", str(bad / "nope.yaml"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ParamsError" in proc.stderr


def test_numbers_yaml_reads_as_text_are_converted(tmp_path):
    from configs.params import load_params
    from train.settings import load_settings

    path = params_with(tmp_path, "p", {"train.lr_generator": "1e-4", "eval.fid_prompts": "1e3"})
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lr_generator"], str)  # YAML 1.1: no dot, text
    assert load_params(path)["eval"]["fid_prompts"] == 1000
    assert load_settings(path)["lr_generator"] == 1e-4


def test_the_whole_file_is_checked_and_every_problem_named(tmp_path):
    """A bad key in a section the command does not read still stops it, with every problem listed."""
    from configs.params import ParamsError, load_params

    path = params_with(tmp_path, "p", {"teacher.steps": -1, "benchmarks.geneval.sed": 1})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert "teacher.steps; benchmarks.geneval.sed" in str(info.value)
    assert "unknown key (did you mean 'seed'?)" in str(info.value)
    assert load_params(ROOT / "params.yaml")  # the shipped file passes
