"""Every key of params.yaml: its default and the rule its value must meet.

A `Section` holds defaults and rules; a rule is a function `(value, key) -> value` that returns the
value (converted where YAML read a number as text: `1e-4` without a dot is the string '1e-4' in YAML
1.1) or raises `ValueError` with what is wrong. A key without an explicit rule gets one from its
default's type. `check(section, values, where)` checks a mapping against a section and returns the
converted values; unknown keys get a close-match suggestion.

The consumers read their defaults from here (`SCHEMA["train"].defaults` is train/settings.py's
DEFAULTS), so one table says what params.yaml may contain, and `configs.params.load_params` checks
a whole file against it before any command starts work.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

Rule = Callable[[Any, str], Any]


# ---------------------------------------------------------------- rules

def _number(value, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"need a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text
        except ValueError:
            pass
    raise ValueError(f"need a number, got {value!r}")


def _integer(value, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"need an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, str)):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise ValueError(f"need an integer, got {value!r}")


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    def rule(value, key):
        try:
            n = _integer(value, key)
        except ValueError:
            n = None
        if n is None or (lo is not None and n < lo) or (hi is not None and n > hi):
            raise ValueError(f"need an integer {_bounds(lo, hi)}, got {value!r}".replace("  ", " "))
        return n
    return rule


def number(lo: float | None = None, hi: float | None = None, hi_open: bool = False, lo_open: bool = False) -> Rule:
    def rule(value, key):
        try:
            x = _number(value, key)
        except ValueError:
            x = float("nan")
        if x != x or (lo is not None and (x < lo or (lo_open and x == lo))) or \
                (hi is not None and (x > hi or (hi_open and x == hi))):
            raise ValueError(f"need a number {_bounds(lo, hi, lo_open, hi_open)}, got {value!r}".replace("  ", " "))
        return x
    return rule


def _bounds(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def boolean(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"need true or false, got {value!r}")


def text(value, key: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"need a non-empty text value, got {value!r}")


def one_of(*choices) -> Rule:
    def rule(value, key):
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"need one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    return rule


def optional(rule: Rule) -> Rule:
    def maybe(value, key):
        return None if value is None else rule(value, key)
    return maybe


def list_of(rule: Rule, min_len: int = 0, length: int | None = None) -> Rule:
    def rule_list(value, key):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"need a list, got {value!r}")
        if length is not None and len(value) != length:
            raise ValueError(f"need a list of {length} values, got {value!r}")
        if len(value) < min_len:
            raise ValueError(f"need a list of at least {min_len} value(s), got {value!r}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(rule(v, f"{key}[{i}]"))
            except ValueError as e:
                raise ValueError(f"entry {i}: {e}") from None
        return out
    return rule_list


def number_or_range(lo: float = 0.0) -> Rule:
    """A guidance value: a number g, or [lo, hi] drawn uniformly (lo <= hi)."""
    single = number(lo)

    def rule(value, key):
        if isinstance(value, (list, tuple)):
            pair = list_of(single, length=2)(value, key)
            if pair[0] > pair[1]:
                raise ValueError(f"need [lo, hi] with lo <= hi, got {value!r}")
            return pair
        try:
            return single(value, key)
        except ValueError:
            raise ValueError(f"need a number or [lo, hi], got {value!r}") from None
    return rule


def weights_of(names: tuple[str, ...]) -> Rule:
    """A mapping name -> weight >= 0 over the given names (a subset; missing ones keep their default)."""
    def rule(value, key):
        if not isinstance(value, dict):
            raise ValueError(f"need a mapping of name: weight, got {value!r}")
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"unknown name(s) {unknown}{_suggest(unknown, names)}; known: {', '.join(names)}")
        return {k: number(0.0)(v, f"{key}.{k}") for k, v in value.items()}
    return rule


def _suggest(unknown, known) -> str:
    close = [(k, m[0]) for k in unknown if (m := difflib.get_close_matches(str(k), list(known), 1))]
    return "".join(f" (did you mean {m!r} for {k!r}?)" for k, m in close)


def rule_for(default) -> Rule:
    """The rule implied by a default's type."""
    if isinstance(default, bool):
        return boolean
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    if isinstance(default, str):
        return text
    if isinstance(default, list):
        return list_of(rule_for(default[0])) if default else list_of(lambda v, k: v)
    raise TypeError(f"no rule can be inferred from default {default!r}; give one")


# ---------------------------------------------------------------- sections

@dataclass
class Section:
    defaults: dict[str, Any]
    rules: dict[str, Rule] = field(default_factory=dict)

    def rule(self, key: str) -> Rule | "Section":
        default = self.defaults[key]
        if isinstance(default, Section):
            return default
        return self.rules.get(key) or rule_for(default)

    def plain_defaults(self) -> dict[str, Any]:
        """The defaults with nested sections as plain dicts (fresh copies)."""
        return {k: v.plain_defaults() if isinstance(v, Section) else _copy(v) for k, v in self.defaults.items()}


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else \
        list(value) if isinstance(value, list) else value


def unknown_key_message(key, known) -> str:
    """'unknown key (did you mean ...?)', or the known keys when none is close."""
    close = difflib.get_close_matches(str(key), list(known), 1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else f"unknown key; known: {', '.join(sorted(known))}"


def check(section: Section, values, where: str, allow_null: bool = False) -> tuple[dict, list[tuple[str, str]]]:
    """(converted values, problems) for a mapping of `section` keys; `where` prefixes the keys in
    problems (e.g. 'train'); with allow_null a null means "not set here" and is kept."""
    if values is None:
        return {}, []
    if not isinstance(values, dict):
        return {}, [(where, f"need a mapping of keys, got {values!r}")]
    unknown = [k for k in values if k not in section.defaults]
    problems = [(f"{where}.{k}", unknown_key_message(k, section.defaults)) for k in unknown]
    out = {}
    for key, value in values.items():
        if key in unknown:
            continue
        rule = section.rule(key)
        if isinstance(rule, Section):
            out[key], inner = check(rule, value, f"{where}.{key}", allow_null)
            problems += inner
        elif value is None and allow_null:
            out[key] = None
        else:
            try:
                out[key] = rule(value, f"{where}.{key}")
            except ValueError as e:
                problems.append((f"{where}.{key}", str(e)))
    return out, problems


# ---------------------------------------------------------------- the sections of params.yaml

TOY_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr",  # GenEval tasks
             "color", "shape", "texture", "spatial", "non_spatial", "complex")  # CompBench categories
COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
METRICS = ("fid_t", "patch_fid_t", "kid_t", "fid", "fd_t_toyworld", "fd_t_dinov2", "clip_score", "hpsv2", "pickscore",
           "imagereward", "aesv2", "lpips_diversity", "clip_diversity")
SAMPLERS = ("stochastic", "euler")
EDITIONS = ("toy", "official")

positive = integer(1)
non_negative = integer(0)

TOYWORLD = Section({
    "seed": 0,
    "train_size": 40000,
    "task_weights": dict.fromkeys(TOY_TASKS, 1.0),
    "oracle_validation_size": 2000,
    "oracle_noise": 12.0,
    "oracle_blur": 0.5,
}, {"seed": non_negative, "train_size": positive, "task_weights": weights_of(TOY_TASKS),
    "oracle_validation_size": positive, "oracle_noise": number(0.0), "oracle_blur": number(0.0)})

TEACHER_EVAL = Section({
    "sample_steps": 20, "guidance_scale": 2.0, "few_steps": [4, 2], "prompts_per_task": 40, "images_per_prompt": 2,
    "seed": 1234, "batch_size": 64,
}, {"sample_steps": positive, "guidance_scale": number(0.0), "few_steps": list_of(positive), "prompts_per_task": positive,
    "images_per_prompt": positive, "seed": non_negative, "batch_size": positive})

TEACHER = Section({
    "seed": 0,
    "layers": 4,
    "heads": 4,
    "head_dim": 32,
    "text_width": 128,
    "text_layers": 2,
    "text_encoder": "toy_clip",  # toy_clip: the toy CLIP's text tower (text_encoder_init), fine-tuned; bert / clip / t5:
                                 # from scratch (t5 becomes a bag of words: results/teacher/experiments/README.md)
    "text_encoder_init": "models/toy/clip",  # CLIP folder whose text tower starts the toy_clip encoder
    "text_lr_scale": 0.1,        # text encoder learning rate = lr x this (0: frozen)
    "shift": 3.0,
    "batch_size": 32,
    "steps": 12000,
    "lr": 2.0e-3,
    "warmup": 200,
    "weight_decay": 0.0,
    "ema": 0.999,
    "cfg_dropout": 0.1,
    "grad_clip": 1.0,
    "threads": 2,
    "checkpoint_every": 500,
    "eval": TEACHER_EVAL,
}, {"seed": non_negative, "layers": positive, "heads": positive, "head_dim": positive, "text_width": positive,
    "text_layers": positive, "text_encoder": one_of("toy_clip", "bert", "clip", "t5"), "text_encoder_init": text,
    "text_lr_scale": number(0.0), "shift": number(0.0, lo_open=True), "batch_size": positive, "steps": positive,
    "lr": number(0.0, lo_open=True), "warmup": non_negative, "weight_decay": number(0.0), "ema": number(0.0, 1.0, hi_open=True),
    "cfg_dropout": number(0.0, 1.0), "grad_clip": number(0.0), "threads": non_negative, "checkpoint_every": positive})

TEACHER_REFINE = Section({
    "steps": 5000,               # further training steps from the pretrained teacher
    "lr": 5.0e-4,                # peak; warm-up then cosine to 5 % of it
    "warmup": 100,
    "seed": 1,                   # data / noise draws of this phase
    "family_weights": {"non_spatial": 8.0, "texture": 4.0, "two_object": 3.0, "shape": 2.0},  # x how often a
                                 # prompt family's pairs are drawn (unlisted: 1)
}, {"steps": positive, "lr": number(0.0, lo_open=True), "warmup": non_negative, "seed": non_negative,
    "family_weights": weights_of(TOY_TASKS)})

ENCODERS = Section({
    "seed": 0,
    "threads": 2,               # torch threads and rendering processes
    "images": 12000,            # rendered training pool, shared by both encoders
    "grammar_fraction": 0.5,    # pool scenes drawn from grammar prompts (rest: random 1-3 objects)
    "prompt_fraction": 0.5,     # caption = the grammar prompt (else a full description of the scene)
    "clip_width": 128,
    "clip_layers": 3,
    "clip_heads": 4,
    "clip_projection_dim": 128,
    "clip_steps": 1000,
    "clip_batch_size": 64,
    "clip_lr": 2.0e-3,
    "clip_warmup": 50,
    "clip_weight_decay": 0.1,
    "dinov2_width": 128,
    "dinov2_layers": 4,
    "dinov2_heads": 4,
    "dinov2_steps": 500,
    "dinov2_batch_size": 64,
    "dinov2_lr": 2.0e-3,
    "dinov2_warmup": 50,
    "dinov2_weight_decay": 0.05,
    "eval_batches": 8,          # retrieval batches of EVAL_BATCH held-out scenes
    "eval_swaps": 250,          # caption-discrimination images per swap kind
}, {"seed": non_negative, "threads": positive, "images": positive, "grammar_fraction": number(0.0, 1.0),
    "prompt_fraction": number(0.0, 1.0), "clip_lr": number(0.0, lo_open=True), "dinov2_lr": number(0.0, lo_open=True),
    "clip_weight_decay": number(0.0), "dinov2_weight_decay": number(0.0),
    **{k: positive for k in ("clip_width", "clip_layers", "clip_heads", "clip_projection_dim", "clip_steps",
                             "clip_batch_size", "dinov2_width", "dinov2_layers", "dinov2_heads", "dinov2_steps",
                             "dinov2_batch_size", "eval_batches", "eval_swaps")},
    "clip_warmup": non_negative, "dinov2_warmup": non_negative})

TRAIN = Section({
    # what to distill
    "family": "toy",                 # backbones.FAMILIES key
    "preset": "toy",                 # configs/families/<preset>.yaml; null: DEFAULTS only
    "teacher": "models/toy/teacher",  # local diffusers folder of the teacher
    "dataset": "data/toyworld/train/dataset.json",  # official SenseFlow JSON (image paths + prompts)
    "resolution": 32,                # image side in pixels (dataset images must have it)
    "num_steps": 4,                  # student steps = number of anchors
    # run length and batch
    "seed": 0,
    "steps": 400,                    # training iterations (each = one fake-score + one discriminator step)
    "batch_size": 8,                 # per process
    "threads": 0,                    # torch CPU threads per process (0: torch default)
    "num_workers": 0,                # DataLoader workers
    # Algorithm 1
    "ttur": 5,                       # fake-score/discriminator updates per generator update
    "backsim_prob": 0.5,             # P(x_{t_i} by backward simulation) vs forward diffusion of the real image
    "real_guidance": 2.0,            # teacher guidance for DMD: number, or [lo, hi] drawn per call
    "dmd_t_sampling": "uniform",     # "uniform": U_int[min, max] on the index axis; "training": family density
    "dmd_t_min": 0.02,
    "dmd_t_max": 0.98,
    "dmd_t_shift": 1.0,              # static shift of the index -> timestep table (SD3.5 / toy: 3)
    "ida": True,
    "ida_lambda": 0.97,              # fake <- lambda * fake + (1 - lambda) * generator
    "isg": True,
    "isg_weight": 1.0,
    "isg_guidance": 2.0,             # teacher guidance for the tau -> tau_mid step: number or [lo, hi]
    "isg_margin": 20.0,              # index units kept free at both segment ends
    "isg_shift": 1.0,                # index-axis shift for tau_mid (SD3.5 / toy: 3)
    "isg_loss": "l2",                # "l2" (paper) or "pseudo_huber" (released)
    "isg_huber_c": 1.0e-3,
    "vfm": True,
    "adv_weight": 0.1,               # generator adversarial weight (lambda_adv)
    "adv_time_weight": "alpha_sq",   # see train.vfm_discriminator.TIME_WEIGHT_MODES
    "vfm_backbone": "models/toy/dinov2",  # local Dinov2Model folder
    "clip": "models/toy/clip",       # local CLIPModel folder (+ tokenizer) for the text condition
    "vfm_layers": None,              # hidden_states indices; null: released hooks scaled to depth
    "vfm_downsample": 3,
    "vfm_resolution": None,          # resize before DINOv2; null: image size (released)
    "diffaug": "color,translation,cutout",
    # optimisation
    "lr_generator": 1.0e-5,
    "lr_fake": 1.0e-5,
    "lr_discriminator": 1.0e-5,
    "warmup_steps": 0,               # linear warm-up of all lrs over this many iterations ...
    "warmup_start": 1.0,             # ... starting at this fraction of each lr (FLUX released: 0.5)
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "weight_decay": 0.0,
    "grad_clip": 1.0,                # max grad norm for every module; 0 disables
    "ema": 0.0,                      # EMA decay of the generator; 0: off (released: off)
    "precision": "fp32",             # "fp32" or "bf16" (policy: train/senseflow.py docstring)
    "gradient_checkpointing": False,  # activation checkpointing of every transformer/UNet block
    "fsdp": False,                   # FSDP2 (fully_shard) generator, fake score and EMA
    "shard_teacher": False,          # with fsdp: shard the frozen teacher and T5 encoder too
    "cpu_offload": False,            # with fsdp: sharded weights, grads and optimizer states in CPU memory
    "optimizer": "adamw",            # "adamw" (torch) or "adamw8bit" (torchao, with fsdp; released SD3.5-L / FLUX)
    "init_student": None,            # diffusers folder to start the generator from (e.g. an earlier 4-step student)
    "launch": "python",              # the distill stage's launcher: python | torchrun ... | accelerate launch ... (README)
    "trackers": ["dvclive"],         # any of dvclive, tensorboard, wandb (offline) through accelerate (README)
    # bookkeeping
    "checkpoint_every": 200,
    "keep_checkpoints": 2,
    "log_every": 10,
    "loss_window": 50,               # iterations in the rolling std of the fake-score loss
    "sample_every": 200,             # sample grid every N iterations (0: only at the end)
    "sample_prompts": 8,
    # metrics along training (train/probe.py): fixed prompts and noise, every eval_every iterations
    "eval_every": 0,                 # 0: off (the toy preset: 100); also at iteration 0 and at the end
    "eval_prompts": 96,              # one image each (ToyWorld: GenEval-style prompts, an equal share per task)
    "eval_prompt_file": None,        # real families: one prompt per line (null: prompts spread over train.dataset)
    "eval_seed": 0,                  # the fixed noise (and the ToyWorld prompt draw)
    "eval_batch_size": 32,
    "eval_sampler": "stochastic",    # the student's sampler for the curves ("stochastic" as `eval.student_sampler`)
    "eval_teacher_steps": 20,        # the teacher's reference samples: Euler steps ...
    "eval_teacher_guidance": None,   # ... at this CFG scale (null: train.real_guidance, the mid-point of a range)
    "eval_clip": None,               # CLIPModel folder for eval/clip_score (null: train.clip on ToyWorld, off otherwise)
    "eval_inception": None,          # clean-fid's inception-2015-12-05.pt for eval/fid_t (real families)
    # collapse / oscillation alarms (train/alarms.py); null switches a signal off
    "alarm_after": 100,              # iterations before the alarms are armed (the start is noisy)
    "alarm_diversity_min": 0.25,     # sample_diversity below: samples collapsing towards one image
    "alarm_contrast_min": 0.25,      # sample_contrast below: solid-colour / washed-out samples
    "alarm_contrast_max": 3.0,       # sample_contrast above: samples blowing up (far noisier than the data)
    "alarm_fake_loss_cv_max": 1.0,   # fake_loss_cv above: the fake-score loss oscillates
    "alarm_logit_gap_max": 6.0,      # d_logit_gap above: the discriminator has won
}, {"alarm_after": non_negative, **{k: optional(number(0.0)) for k in (
        "alarm_diversity_min", "alarm_contrast_min", "alarm_contrast_max", "alarm_fake_loss_cv_max",
        "alarm_logit_gap_max")},
    "family": one_of("toy", "sd3", "flux", "sdxl"), "preset": optional(text),
    "teacher": optional(text), "dataset": optional(text),  # real presets leave them to the user (checked at resolve)
    **{k: positive for k in ("resolution", "num_steps", "steps", "batch_size", "ttur", "checkpoint_every",
                             "keep_checkpoints", "log_every", "loss_window", "vfm_downsample")},
    **{k: non_negative for k in ("seed", "threads", "num_workers", "warmup_steps", "sample_every", "sample_prompts")},
    "backsim_prob": number(0.0, 1.0), "ida_lambda": number(0.0, 1.0), "ema": number(0.0, 1.0, hi_open=True),
    "dmd_t_sampling": one_of("uniform", "training"), "dmd_t_min": number(0.0, 1.0), "dmd_t_max": number(0.0, 1.0),
    "dmd_t_shift": number(0.0, lo_open=True), "isg_shift": number(0.0, lo_open=True),
    "real_guidance": number_or_range(), "isg_guidance": number_or_range(),
    "isg_loss": one_of("l2", "pseudo_huber"), "isg_huber_c": number(0.0, lo_open=True),
    "adv_time_weight": one_of("alpha_sq", "one_minus_sigma_sq", "sqrt_alphabar"),
    "vfm_backbone": optional(text), "clip": optional(text), "vfm_layers": optional(list_of(integer(0), min_len=1)),
    "vfm_resolution": optional(positive), "diffaug": lambda v, k: "" if v in (None, "") else text(v, k),
    **{k: number(0.0) for k in ("lr_generator", "lr_fake", "lr_discriminator", "eps", "weight_decay", "grad_clip",
                                "adv_weight", "isg_weight", "isg_margin")},
    "warmup_start": number(0.0, 1.0, lo_open=True), "betas": list_of(number(0.0, 1.0, hi_open=True), length=2),
    "precision": one_of("fp32", "bf16"), "optimizer": one_of("adamw", "adamw8bit"), "init_student": optional(text),
    "trackers": list_of(one_of("dvclive", "tensorboard", "wandb"), min_len=1),
    "eval_every": non_negative, "eval_prompts": integer(2), "eval_prompt_file": optional(text),
    "eval_seed": non_negative, "eval_batch_size": positive, "eval_sampler": one_of(*SAMPLERS),
    "eval_teacher_steps": positive, "eval_teacher_guidance": optional(number(0.0)), "eval_clip": optional(text),
    "eval_inception": optional(text),
})

SAMPLER = {
    "teacher_steps": 20,           # teacher reference samples: Euler steps at teacher_guidance (CFG)
    "teacher_guidance": 2.0,
    "student_steps": 4,
    "student_sampler": "stochastic",  # the paper's "Ours"; euler = "Ours (Euler)"
    "student_guidance": 1.0,
}
SAMPLER_RULES = {"teacher_steps": positive, "teacher_guidance": number(0.0), "student_steps": positive,
                 "student_sampler": one_of(*SAMPLERS), "student_guidance": number(0.0)}

EVAL = Section({
    "seed": 0,
    "prompt_file": None,          # real runs: one prompt per line (first fid_prompts + diversity_prompts used)
    "real_images": None,          # `fid` against real images: COCO-5K's coco5k.jsonl (python -m evaluate.coco5k) or a folder
    "fid_prompts": 384,
    "diversity_prompts": 8,
    "diversity_samples": 16,
    "batch_size": 64,
    **SAMPLER,
    "metrics": list(METRICS),
    "batch_size_metrics": 64,
    "clip_score_scale": "cosine",  # cosine (the paper's, 0.3286) | torchmetrics (100 x cosine, 32.86)
    "bootstrap": 200,             # bootstrap replicates of the 95 % intervals and paired comparisons (0: none)
    "protocol": "custom",         # custom (the values here) | paper (protocols/paper_protocol.py, per train.preset)
    "protocol_teacher_guidance": None,  # paper protocol: the teachers' CFG (null: each model card's default)
    "subset": Section({"fid_prompts": None, "diversity_prompts": None},
                      {"fid_prompts": optional(positive), "diversity_prompts": optional(non_negative)}),
}, {"bootstrap": non_negative, "clip_score_scale": one_of("cosine", "torchmetrics"),
    "protocol": one_of("custom", "paper"), "protocol_teacher_guidance": optional(number(0.0)), "seed": non_negative, "prompt_file": optional(text), "real_images": optional(text), "fid_prompts": positive, "diversity_prompts": non_negative,
    "diversity_samples": integer(2), "batch_size": positive, "batch_size_metrics": positive,
    "metrics": list_of(one_of(*METRICS)), **SAMPLER_RULES})

GENEVAL = Section({
    "edition": "toy",            # toy (ToyWorld grammar + oracle) | official (553 prompts + Mask2Former/CLIP)
    "metadata": None,            # official edition: a metadata file (default: the shipped official one)
    "prompts_per_task": 16,      # toy edition
    "images_per_prompt": 4,      # the official default
    "seed": 0,
    "batch_size": 64,
    "subset": Section({"prompts": None, "images_per_prompt": None},  # official edition: a declared, labelled subset
                      {"prompts": optional(positive), "images_per_prompt": optional(positive)}),
    **SAMPLER,
}, {"edition": one_of(*EDITIONS), "metadata": optional(text), "prompts_per_task": positive, "images_per_prompt": positive,
    "seed": non_negative, "batch_size": positive, **SAMPLER_RULES})

COMPBENCH = Section({
    "edition": "toy",              # toy (ToyWorld grammar + oracle) | official (val lists + real models)
    "categories": list(COMPBENCH_CATEGORIES),
    "prompts_per_category": None,  # null: 16 (toy), every val prompt (official; fewer needs `subset`)
    "images_per_prompt": None,     # null: 8 (toy), 10 (official, the protocol's; fewer needs `subset`)
    "seed": 42,
    "batch_size": 32,
    "detector_threshold": None,    # official spatial detector's score threshold (null: 0.5 closed-set, 0.1 OWLv2)
    "subset": Section({"prompts_per_category": None, "images_per_prompt": None},  # official: declared subset
                      {"prompts_per_category": optional(positive), "images_per_prompt": optional(positive)}),
    **SAMPLER,                     # teacher (Euler, CFG) when no student is given; student steps/sampler
}, {"edition": one_of(*EDITIONS), "categories": list_of(one_of(*COMPBENCH_CATEGORIES), min_len=1),
    "prompts_per_category": optional(positive), "images_per_prompt": optional(positive), "seed": non_negative,
    "detector_threshold": optional(number(0.0, 1.0)),
    "batch_size": positive, **SAMPLER_RULES})

BENCHMARKS = Section({"geneval": GENEVAL, "compbench": COMPBENCH})

MODEL_KEYS = ("toy_clip", "toy_dinov2", "inception", "dinov2", "clip_vit_b32", "lpips_alexnet", "hpsv2", "pickscore",
              "pickscore_processor", "aesv2", "imagereward", "imagereward_tokenizer", "aesv2_clip", "geneval_detector",
              "geneval_clip", "compbench_blip_vqa", "compbench_detector", "compbench_spacy")
MODELS = Section({**dict.fromkeys(MODEL_KEYS), "hpsv2_arch": "ViT-H-14", "hpsv2_version": "v2.1"},
                 {**{k: optional(text) for k in MODEL_KEYS}, "hpsv2_version": one_of("v2.0", "v2.1")})

def seed_list(value, key: str) -> list[int]:
    """The training seeds of the pipeline: distinct non-negative integers, at least one."""
    seeds = list_of(non_negative, min_len=1)(value, key)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"need distinct seeds, got {value!r}")
    return seeds


SCHEMA: dict[str, Section | Rule] = {
    "seed": non_negative,
    "seeds": seed_list,  # training seeds of the pipeline (dvc.yaml matrix variant x seed)
    "euler_variants": list_of(text),  # variants also scored with the Euler sampler (the *_euler stages)
    "toyworld": TOYWORLD,
    "teacher": TEACHER,
    "teacher_refine": TEACHER_REFINE,
    "encoders": ENCODERS,
    "train": TRAIN,
    "variants": None,  # a mapping name -> train keys; checked against TRAIN (configs.params)
    "eval": EVAL,
    "models": MODELS,
    "benchmarks": BENCHMARKS,
}

__all__ = ["Section", "SCHEMA", "check", "integer", "number", "boolean", "text", "one_of", "optional", "list_of",
           "number_or_range", "weights_of", "rule_for", "unknown_key_message", "TOY_TASKS", "METRICS"]
