"""The error convention of every command (configs/cli.py): a problem the user can fix prints one line
`error: ...` on stderr and exits with status 2, with no traceback unless --debug; nothing is
written. Each case goes through the real command line in a fresh process."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def errors(proc) -> list[str]:
    """stderr lines that are ours (library import chatter such as torchao's warnings filtered)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "broken.yaml").write_text("train: {ttur: [1, 2\n")
    (root / "typo.yaml").write_text((ROOT / "params.yaml").read_text().replace("\ntrain:", "\ntrian:"))
    (root / "latin1.txt").write_bytes("une licorne rouge, caf\xe9\n".encode("latin-1"))
    params = (ROOT / "params.yaml").read_text().replace("prompt_file: null", f"prompt_file: {root / 'latin1.txt'}")
    (root / "latin1_params.yaml").write_text(params)
    return root


CASES = {
    "missing params file": (["train.senseflow", "--params", "{bad}/nope.yaml"], "params file"),
    "params not YAML": (["train.senseflow", "--params", "{bad}/broken.yaml"], "while parsing"),
    "section typo": (["train.senseflow", "--params", "{bad}/typo.yaml"], "'trian' (did you mean 'train'?)"),
    "unknown train key": (["train.senseflow", "-S", "train.bogus=1"], "unknown train key"),
    "bad train value": (["train.senseflow", "-S", "train.precision=fp16"], "train.precision must be one of"),
    "unknown variant": (["train.senseflow", "--variant", "wo_everything"], "variant 'wo_everything'"),
    "not a checkpoint": (["train.export_checkpoint", "{bad}/no_checkpoint"], "not a readable checkpoint"),
    "unknown family": (["evaluate.generate", "--family", "nope", "--out", "{bad}/gen"], "unknown model family"),
    "missing samples": (["evaluate.metrics", "--samples", "{bad}/s", "--reference", "{bad}/r", "--out", "{bad}/m"],
                        "samples folder"),
    "missing geneval images": (["benchmarks.geneval", "--score-only", "{bad}/none", "--out", "{bad}/g"],
                               "GenEval image folder"),
    "report on unknown family params": (["dashboards.report", "--params", "{bad}/typo.yaml", "--out", "{bad}/rep"],
                                        "unknown section"),
    "no GPU": (["train.gpu_check", "--out", "{bad}/gpu.json"], "needs CUDA GPUs"),
    "prompt file not UTF-8": (["evaluate.generate", "--params", "{bad}/latin1_params.yaml", "--out", "{bad}/gen"],
                              "latin1.txt' is not UTF-8 text"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_errors_are_one_line_with_status_2(bad, name):
    args, expected = CASES[name]
    proc = run(*[a.format(bad=bad) for a in args])
    assert proc.returncode == 2, (name, proc.stdout[-500:], proc.stderr[-2000:])
    lines = errors(proc)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, proc.stderr[-2000:])
    assert not (bad / "gen").exists() and not (bad / "rep").exists() and not (bad / "gpu.json").exists()


def test_debug_shows_the_traceback(bad):
    proc = run("train.senseflow", "--params", str(bad / "nope.yaml"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ParamsError" in proc.stderr
