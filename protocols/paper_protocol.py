"""The paper's evaluation protocol as a preset: `eval.protocol: paper` (with `train.preset` sd35_large,
flux or sdxl) sets what SenseFlow's Tab. 1, 4 and 5 were computed on, over params.yaml's values:

  eval                    COCO-5K prompts (`eval.prompt_file`: data/coco5k/prompts.txt, built by
                          `python -m evaluate.coco5k`) and its real images for `fid` (`real_images`),
                          N = 5,000 (`fid_prompts`); the teacher reference
                          at the paper's NFE with the teacher's guidance (below); the student at 4 steps
  benchmarks.geneval      official edition, GenEval's 553 prompts x 4 images
  benchmarks.compbench    official edition, every val prompt (300 per category) x 10 images, seeds 42..51

Teacher reference (Tab. 1 #NFE; an NFE is one network evaluation, so a teacher sampled with
classifier-free guidance makes two per step): SD 3.5 Large 80 NFE = 40 Euler steps with CFG, SDXL
80 NFE = 40 steps with CFG, FLUX.1-dev 50 NFE = 50 steps (guidance-distilled: one evaluation per
step). The paper does not state the teachers' guidance; the preset uses each model card's default
(SD 3.5 Large 3.5, FLUX.1-dev 3.5, SDXL 5.0), an assumption stated here and in the provenance;
`eval.protocol_teacher_guidance` replaces it (for the FID-T reference and both benchmarks).

Under the paper protocol its values replace params.yaml's (a note on stderr lists the ones that
differed). A smaller set is never run silently: under the paper protocol, and for an official benchmark edition
in any protocol, a count below the official one is refused unless it is declared in the section's
`subset` (e.g. `eval.subset: {fid_prompts: 1000}`, `benchmarks.compbench.subset:
{prompts_per_category: 30, images_per_prompt: 2}`), and a declared subset is labelled as one in
every output (metrics.meta.json, the benchmarks' summary.json, summary.csv `protocol_warning`, the
dashboard).
"""
from __future__ import annotations

import sys

from configs.params import ParamsError

PROTOCOLS = ("custom", "paper")
COCO5K_PROMPTS = "data/coco5k/prompts.txt"
COCO5K_REAL = "data/coco5k/coco5k.jsonl"  # the real images of the same 5,000 rows, for `fid`
# preset -> (teacher Euler steps, teacher guidance, the paper's NFE)
TEACHER = {"sd35_large": (40, 3.5, 80), "flux": (50, 3.5, 50), "sdxl": (40, 5.0, 80)}
GENEVAL_PROMPTS, GENEVAL_IMAGES = 553, 4
COMPBENCH_PROMPTS, COMPBENCH_IMAGES, COMPBENCH_SEED = 300, 10, 42
# the counts a section's `subset` may lower, per section
SUBSET_KEYS = {"eval": ("fid_prompts", "diversity_prompts"),
               "benchmarks.geneval": ("prompts", "images_per_prompt"),
               "benchmarks.compbench": ("prompts_per_category", "images_per_prompt")}


def protocol_values(section: str, preset: str | None, guidance_override: float | None = None) -> dict:
    """What the paper protocol sets in one params section for one family preset."""
    if preset not in TEACHER:
        raise ParamsError(f"eval.protocol: paper needs train.preset sd35_large, flux or sdxl (the families the paper "
                          f"evaluates), got {preset!r}; use eval.protocol: custom")
    steps, guidance, _ = TEACHER[preset]
    guidance = float(guidance if guidance_override is None else guidance_override)
    if section == "eval":  # COCO-5K has exactly 5,000 prompts: the diversity prompts are its first ones again
        return {"prompt_file": COCO5K_PROMPTS, "real_images": COCO5K_REAL, "fid_prompts": 5000, "teacher_steps": steps,
                "teacher_guidance": guidance, "student_steps": 4, "diversity_reuse": True}
    if section == "benchmarks.geneval":
        return {"edition": "official", "metadata": None, "images_per_prompt": GENEVAL_IMAGES,
                "teacher_steps": steps, "teacher_guidance": guidance, "student_steps": 4}
    if section == "benchmarks.compbench":
        return {"edition": "official", "prompts_per_category": None, "images_per_prompt": COMPBENCH_IMAGES,
                "seed": COMPBENCH_SEED, "teacher_steps": steps, "teacher_guidance": guidance, "student_steps": 4}
    raise KeyError(section)


def official_counts(section: str) -> dict:
    """The counts an official edition scores (None: every prompt of the official set)."""
    if section == "benchmarks.geneval":
        return {"prompts": GENEVAL_PROMPTS, "images_per_prompt": GENEVAL_IMAGES}
    if section == "benchmarks.compbench":
        return {"prompts_per_category": None, "images_per_prompt": COMPBENCH_IMAGES}
    return {"fid_prompts": 5000}


def resolve(section: str, cfg: dict, params: dict) -> dict:
    """A merged params section under `eval.protocol` and its `subset`: the paper protocol's values over
    params.yaml's, then the declared subset (smaller counts only). Adds `protocol` and `subset` ({} when
    the full set runs) to the returned settings. Refuses an official benchmark edition, or the paper
    protocol, below the official counts without a declared subset."""
    protocol = str((params.get("eval") or {}).get("protocol") or "custom")
    if protocol not in PROTOCOLS:
        raise ParamsError(f"eval.protocol: need one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    out = dict(cfg)
    subset = {k: v for k, v in (cfg.get("subset") or {}).items() if v is not None}
    if protocol == "paper":
        values = protocol_values(section, (params.get("train") or {}).get("preset"),
                                 (params.get("eval") or {}).get("protocol_teacher_guidance"))
        replaced = [f"{k}={cfg[k]!r}" for k, v in values.items() if k in cfg and cfg[k] is not None and cfg[k] != v]
        if replaced:
            print(f"note: eval.protocol: paper replaces {section}'s {', '.join(replaced)} with the paper's values "
                  f"(smaller sets: declare {section}.subset)", file=sys.stderr)
        out.update(values)
    official = protocol == "paper" or out.get("edition") == "official"
    for key, value in subset.items():
        full = official_counts(section).get(key) if official else out.get(key)
        if key == "prompts":  # GenEval's subset counts prompts per task (at most 100 in the official file)
            full = 100 if official else None
        if full is not None and int(value) > int(full):
            raise ParamsError(f"{section}.subset.{key}: {value} is not a subset of the {'official' if official else ''} "
                              f"{full}; a subset only lowers a count")
        if key != "prompts":  # GenEval's prompt subset is checked against the metadata file when it is read
            out[key] = int(value)
    if official and section != "eval":
        for key, full in official_counts(section).items():
            if key in subset or key == "prompts":
                continue
            if out.get(key) is not None and (full is None or int(out[key]) < full):
                raise ParamsError(
                    f"{section}.{key}: {out.get(key)} is smaller than the official edition's "
                    f"{'every prompt' if full is None else full}: remove it for the official count, or declare "
                    f"{section}.subset: {{{key}: {out.get(key)}}} to run a subset that is labelled as one")
    out["protocol"], out["subset"] = protocol, subset
    return out


def subset_label(subset: dict) -> str:
    """'subset: fid_prompts=1000' (empty for the full set)."""
    return "subset: " + ", ".join(f"{k}={v}" for k, v in subset.items()) if subset else ""


__all__ = ["PROTOCOLS", "TEACHER", "GENEVAL_PROMPTS", "COCO5K_PROMPTS", "protocol_values", "official_counts", "resolve", "subset_label"]
