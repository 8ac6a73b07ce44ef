"""Images from a teacher or a distilled student: one sampling path for every stage that generates
(`generate`, `geneval`, `compbench`).

A `Generator` is a family backbone (teacher folder) plus the denoiser to sample with: the
teacher's own, or a student exported by `train.senseflow` (`<run>/student/<subfolder>/`, the
layout of the teacher's `transformer/` or `unet/`). Every image has its own seed: its initial
noise is drawn from `torch.Generator().manual_seed(seed)`, so teacher and students given the same
(prompt, seed) pairs start from the same noise (aligned FID-T pairs), and a resumed stage
reproduces what an uninterrupted one would have written. The stochastic sampler's re-noising is
seeded by the first seed of each batch, so it is reproducible for a fixed batch split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from backbones import load_backbone
from backbones.base import Backbone, BackboneError
from configs.paths import readable_folder, supersede
from configs.schema import SAMPLER, SAMPLERS
from protocols.images import save_png, to_uint8

# the sampler block every generating stage's settings carry (eval, benchmarks.geneval, benchmarks.compbench)
SAMPLER_DEFAULTS = dict(SAMPLER)  # teacher reference (Euler, CFG) and student sampling: configs/schema.py


@dataclass
class Generator:
    backbone: Backbone
    net: torch.nn.Module
    steps: int
    sampler: str
    guidance_scale: float
    resolution: tuple[int, int]  # (H, W)
    source: str              # "teacher" or the student folder, for metadata

    def describe(self) -> dict:
        return {"family": self.backbone.family, "source": self.source, "steps": self.steps,
                "sampler": self.sampler, "guidance_scale": self.guidance_scale, "resolution": self.resolution}


def student_folder(student: str | Path, backbone: Backbone) -> Path:
    """The denoiser folder of a student: accepts the run dir, its `student/`, or the subfolder itself."""
    p = Path(student)
    sub = backbone.denoiser_subfolder
    for cand in (p / "student" / sub, p / sub, p):
        if (cand / "config.json").is_file():
            return cand
    raise BackboneError(f"no student checkpoint in {str(p)!r}: expected {sub}/config.json (a diffusers "
                        f"{sub} folder as written by train.senseflow under <run>/student/)")


def load_generator(family: str, teacher: str | Path, student: str | Path | None = None, *, steps: int,
                   sampler: str = "euler", guidance_scale: float = 1.0, device: str = "cpu",
                   dtype: torch.dtype = torch.float32, **options) -> Generator:
    """The teacher of `family` at `teacher` (a local diffusers folder) sampling with its own denoiser,
    or with the student at `student` if given (students are normally sampled at guidance 1: CFG is
    distilled in). `options` go to the family's loader (e.g. resolution=1024 for flux/sdxl); the
    image size is the backbone's `resolution`."""
    if sampler not in SAMPLERS:
        raise BackboneError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise BackboneError(f"steps must be >= 1, got {steps}")
    bb = load_backbone(family, teacher, device=device, dtype=dtype, **options)
    net, source = bb.denoiser, "teacher"
    if student is not None:
        folder = student_folder(student, bb)
        net = bb.load_denoiser(folder).to(device).eval()
        if next(net.parameters()).dtype != dtype:
            net = net.to(dtype)
        source = str(folder)
    return Generator(bb, net, steps, sampler, float(guidance_scale), tuple(bb.resolution), source)


def add_generator_arguments(ap) -> None:
    """--params/--family/--teacher/--student/--out of the stages that generate (argparse parser)."""
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--family", default="toy")
    ap.add_argument("--teacher", default="models/toy/teacher")
    ap.add_argument("--student", default=None, help="distilled student (run dir, its student/, or the subfolder)")
    ap.add_argument("--student-sampler", choices=SAMPLERS, default=None,
                    help="the student's sampler instead of the settings' student_sampler (euler: the paper's "
                         "\"Ours (Euler)\" rows)")
    ap.add_argument("--out", required=True)


def sampler_choice(ap, args, cfg: dict) -> dict:
    """The settings block with --student-sampler applied (a usage error without --student: the teacher
    always samples with Euler)."""
    if args.student_sampler is None:
        return cfg
    if not args.student:
        ap.error("--student-sampler needs --student (the teacher samples with Euler at its teacher_steps)")
    return {**cfg, "student_sampler": args.student_sampler}


def generator_from_settings(family: str, teacher: str | Path, student: str | Path | None, cfg: dict) -> Generator:
    """The generator a stage samples with: the student at `student_steps` / `student_sampler` /
    `student_guidance` of a settings block (eval, benchmarks.geneval, benchmarks.compbench), or,
    without a student, the teacher at `teacher_steps` Euler steps and `teacher_guidance`. The folders
    are checked (naming their flags) before anything loads."""
    readable_folder(teacher, "the teacher folder", "--teacher")
    if student:
        readable_folder(student, "the student folder", "--student")
    if student:
        return load_generator(family, teacher, student, steps=cfg["student_steps"], sampler=cfg["student_sampler"],
                              guidance_scale=cfg["student_guidance"])
    return load_generator(family, teacher, steps=cfg["teacher_steps"], sampler="euler",
                          guidance_scale=cfg["teacher_guidance"])


def initial_noise(gen: Generator, seeds: list[int]) -> torch.Tensor:
    shape = gen.backbone.latent_shape(*gen.resolution)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def generate(gen: Generator, prompts: list[str], seeds: list[int], batch_size: int = 32,
             progress: bool = False) -> np.ndarray:
    """(N, H, W, 3) uint8 images for aligned lists of prompts and per-image seeds."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    bb = gen.backbone
    out = []
    starts = range(0, len(prompts), batch_size)
    for i in tqdm(starts, desc=f"sampling ({gen.source})", unit="batch", disable=not progress):
        p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
        noise = initial_noise(gen, s).to(bb.device, bb.dtype)
        cond = bb.encode_prompts(p)
        renoise = torch.Generator(device=bb.device).manual_seed(int(s[0]))
        x0 = bb.sample(gen.net, cond, noise, gen.steps, sampler=gen.sampler, guidance_scale=gen.guidance_scale,
                       generator=renoise)
        out.append(to_uint8(bb.decode(x0)))
    if not out:
        return np.zeros((0, *gen.resolution, 3), np.uint8)
    return np.concatenate(out)



def reset_folder(folder: Path, settings: dict, label: str) -> None:
    """Keep a partly generated `folder` only if its generation.json records the same `settings`
    (compared in their JSON form); otherwise move its content to `<folder>.superseded/<UTC time>/`
    (never deleted). Then (re)write the record."""
    folder = Path(folder)
    settings = json.loads(json.dumps(settings))
    record = folder / "generation.json"
    if record.is_file() and json.loads(record.read_text()) != settings:
        print(f"{label}: {folder} was generated with other settings; its images moved to {supersede(folder)}")
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))


def render_missing(gen: Generator, jobs: list[tuple[Path, str, int]], batch_size: int, desc: str) -> None:
    """Generate the (path, prompt, seed) jobs whose file does not exist yet, in batches of
    `batch_size` in job order, each PNG written atomically (resume = run again)."""
    todo = [job for job in jobs if not Path(job[0]).is_file()]
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch", disable=not todo):
        chunk = todo[i:i + batch_size]
        images = generate(gen, [prompt for _, prompt, _ in chunk], [seed for _, _, seed in chunk], batch_size)
        for (path, _, _), image in zip(chunk, images):
            save_png(image, path)
