"""Where along its few steps a student loses GenEval accuracy: samplers that hand over between the
student and the teacher at the student's anchors.

    python -m benchmarks.geneval.handoff --student runs/distill/full-0 --out outputs/handoff/full-0
                                         [--modes s0,s1,s2,s3,s4,t1,t2,t3] [--prompts-per-task 16]

Modes (N = the student's step count, anchors tau_0 = T > tau_1 > ... > tau_{N-1}):
  s<k>  the student's first k steps (its own sampler), then the teacher from tau_k to the end on its
        Euler grid (`teacher_steps`, CFG `teacher_guidance`): s0 is the teacher alone, s<N> the student alone;
  t<k>  the teacher on its grid from T down to tau_k, then the student's steps k..N-1: t0 is the student alone.
s<k> asks "are the student's first k steps as good as the teacher's start?", t<k> "can the student's last
N-k steps finish what the teacher started?".

Prompts, per-image seeds (seed + 1000 * index + k), batches and the stochastic sampler's re-noising
seeds are those of the `geneval` stage (`benchmarks.geneval` settings), so s0 reproduces the teacher's
`geneval` images and s<N> / t0 the student's, image for image. Toy edition only: graded by the ToyWorld
oracle with GenEval's rules. Writes `<out>/<mode>/images/` (the official layout), `<out>/<mode>/summary.json`
and `<out>/handoff.json` (every mode's scores); a mode whose images are complete and were sampled
with the same settings is not sampled again, only graded.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from benchmarks.geneval.__main__ import geneval_settings
from benchmarks.geneval.detectors import OracleDetector
from benchmarks.geneval.metadata import toy_metadata
from benchmarks.geneval.run import layout_jobs, score_layout
from benchmarks.geneval.summary import summarize
from configs.cli import ArgumentParser, count, run_command
from configs.params import ParamsError, load_params
from configs.paths import readable_folder, writable_folder
from evaluate.sampling import Generator, initial_noise, load_generator, reset_folder
from protocols.images import save_png, to_uint8

MODE = re.compile(r"^([st])(\d+)$")


def parse_modes(text: str, steps: int) -> list[tuple[str, int]]:
    """'s0,s2,t1' -> [('s', 0), ('s', 2), ('t', 1)]; k must be 0..steps (t: 0..steps-1)."""
    modes = []
    for item in filter(None, (m.strip() for m in text.split(","))):
        match = MODE.match(item)
        if not match:
            raise ParamsError(f"--modes: {item!r} is not s<k> or t<k>")
        kind, k = match.group(1), int(match.group(2))
        if k > steps or (kind == "t" and k == steps):
            raise ParamsError(f"--modes: {item!r} needs k <= {steps} (s) or k < {steps} (t) for a {steps}-step student")
        modes.append((kind, k))
    if not modes:
        raise ParamsError("--modes: name at least one mode")
    return modes


@torch.no_grad()
def handoff_sample(teacher: Generator, student: Generator, mode: tuple[str, int], cond, noise: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """x0 latents of one batch under a hand-off mode (module docstring)."""
    bb = teacher.backbone
    anchors = bb.sampling_timesteps(student.steps).to(noise.device)
    grid = bb.sampling_timesteps(teacher.steps).to(noise.device)
    kind, k = mode
    n = len(anchors)
    student_range = range(k) if kind == "s" else range(k, n)
    x = noise
    if kind == "t" and k > 0:  # the teacher's Euler steps down to tau_k
        ts = torch.cat([grid[grid > anchors[k] + 1e-3], anchors[k:k + 1]])
        for t, t_next in zip(ts[:-1], ts[1:]):
            x, _ = bb.sampler_step(teacher.net, x, t, t_next, cond, "euler", teacher.guidance_scale)
    x0 = x
    for i in student_range:
        t_next = anchors[i + 1] if i + 1 < n else None
        x, x0 = bb.sampler_step(student.net, x, anchors[i], t_next, cond, student.sampler, generator=generator)
    if kind == "s" and k < n:  # the teacher from tau_k to the end of its grid
        ts = torch.cat([anchors[k:k + 1], grid[grid < anchors[k] - 1e-3]])
        x0 = bb.sample(teacher.net, cond, x, len(ts), sampler="euler", guidance_scale=teacher.guidance_scale,
                       timesteps=ts)
    return x0


def render_mode(teacher: Generator, student: Generator, mode: tuple[str, int], metadatas: list[dict], cfg: dict,
                images: Path) -> None:
    """The mode's images in GenEval's layout, in the `geneval` stage's jobs, batches and seeds."""
    jobs = layout_jobs(metadatas, cfg, images)
    bb, size = teacher.backbone, int(cfg["batch_size"])
    for i in range(0, len(jobs), size):
        chunk = jobs[i:i + size]
        seeds = [seed for _, _, seed in chunk]
        noise = initial_noise(teacher, seeds).to(bb.device, bb.dtype)
        cond = bb.encode_prompts([prompt for _, prompt, _ in chunk])
        renoise = torch.Generator(device=bb.device).manual_seed(int(seeds[0]))
        x0 = handoff_sample(teacher, student, mode, cond, noise, renoise)
        for (path, _, _), image in zip(chunk, to_uint8(bb.decode(x0))):
            save_png(image, path)


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--teacher", default="models/toy/teacher")
    ap.add_argument("--student", required=True, help="distilled student (run dir, its student/, or the subfolder)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--modes", default=None, help="comma-separated s<k> / t<k> (default: all of them)")
    ap.add_argument("--prompts-per-task", type=count(1), default=None,
                    help="instead of benchmarks.geneval.prompts_per_task (fewer: faster, wider intervals)")
    args = ap.parse_args(argv)
    cfg = geneval_settings(load_params(args.params))
    if cfg["edition"] != "toy":
        raise ParamsError("the hand-off diagnostic grades with the ToyWorld oracle: benchmarks.geneval.edition must be toy")
    if args.prompts_per_task is not None:
        cfg = {**cfg, "prompts_per_task": args.prompts_per_task}
    steps = int(cfg["student_steps"])
    default_modes = ",".join([f"s{k}" for k in range(steps + 1)] + [f"t{k}" for k in range(1, steps)])
    modes = parse_modes(args.modes or default_modes, steps)
    readable_folder(args.teacher, "the teacher folder", "--teacher")
    readable_folder(args.student, "the student folder", "--student")
    out = writable_folder(args.out, "the hand-off output folder", "--out")
    teacher = load_generator("toy", args.teacher, steps=int(cfg["teacher_steps"]), sampler="euler",
                             guidance_scale=float(cfg["teacher_guidance"]))
    student = load_generator("toy", args.teacher, args.student, steps=steps, sampler=cfg["student_sampler"],
                             guidance_scale=float(cfg["student_guidance"]))
    if student.guidance_scale != 1.0:
        raise ParamsError("the hand-off diagnostic samples the student at guidance 1 (benchmarks.geneval.student_guidance)")
    metadatas = toy_metadata(int(cfg["prompts_per_task"]), int(cfg["seed"]))
    record_file = out / "handoff.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    for kind, k in modes:
        name = f"{kind}{k}"
        settings = {"teacher": teacher.describe(), "student": student.describe(), "mode": name,
                    "seed": cfg["seed"], "images_per_prompt": cfg["images_per_prompt"], "batch_size": cfg["batch_size"],
                    "prompts": [m["prompt"] for m in metadatas]}
        settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
        images = out / name / "images"
        done = images / "generation.json"
        expected = len(metadatas) * int(cfg["images_per_prompt"])
        if not (done.is_file() and json.loads(done.read_text()) == settings
                and len(list(images.glob("*/samples/*.png"))) == expected):
            reset_folder(images, settings, "hand-off")
            render_mode(teacher, student, (kind, k), metadatas, cfg, images)
        summary, _ = summarize(score_layout(OracleDetector(), images))  # always re-graded (cheap)
        (out / name / "summary.json").write_text(json.dumps({**summary, "settings": settings}, indent=2) + "\n")
        record[name] = {key: value for key, value in summary.items() if key.startswith("geneval_")}
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: overall {record[name]['geneval_overall']:.3f}", flush=True)
    return record


if __name__ == "__main__":
    run_command(main)
