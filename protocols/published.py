"""The paper's published numbers (SenseFlow, ICLR 2026: Tab. 1, 2, 4, 5 and the appendix's expanded
Tab. 2) and the protocol behind each, so a user's row can be read next to them.

`published_senseflow_iclr2026.csv` (long format, one cell of a paper table per line):
  table    "Tab. 1", "Tab. 2", "Tab. 4", "Tab. 5", "Tab. 9 (appendix: expanded Tab. 2)"
  row      the row as the paper prints it (group / label)
  method   our slug: senseflow, senseflow_euler, senseflow_wo_isg, ..., teacher, dmd2, hyper, ...
  variant  the workbench variant it corresponds to (full, wo_isg, wo_ida, wo_both, teacher), or empty
  family   the preset it belongs to: sd35_large, flux, sdxl
  nfe, sampler, metric (DESIGN.md names), value (Tab. 4's percentages as fractions)
Cells printed as "–" are absent. Where the same method and metric appear in two tables with
different values (e.g. Ours-SD 3.5 HPSv2 0.3016 in Tab. 1, 0.3015 in Tab. 2), both lines are kept;
the summary row takes the first table in TABLE_ORDER.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PUBLISHED_CSV = Path(__file__).with_name("published_senseflow_iclr2026.csv")
COLUMNS = ["table", "row", "method", "variant", "family", "nfe", "sampler", "metric", "value"]
PAPER_FAMILIES = ("sd35_large", "flux", "sdxl")  # presets with published numbers
TABLE_ORDER = ["Tab. 1", "Tab. 4", "Tab. 5", "Tab. 2", "Tab. 9 (appendix: expanded Tab. 2)"]
PREFIX = "published:"


@dataclass(frozen=True)
class PaperProtocol:
    """How the paper computed a metric: the image count a value rests on and the prompt set."""
    n_images: int
    prompts: str
    tool: str


COCO5K = PaperProtocol(5000, "COCO-5K (COCO 2017 val, one caption per image)", "")
PAPER_PROTOCOL = {
    "fid_t": PaperProtocol(5000, COCO5K.prompts, "clean-fid Inception-v3 against the teacher's samples"),
    "fid": PaperProtocol(5000, COCO5K.prompts, "clean-fid Inception-v3 against the COCO-5K images (Fig. 11)"),
    "patch_fid_t": PaperProtocol(5000, COCO5K.prompts, "clean-fid Inception-v3 on 299 px patches, against the teacher"),
    "clip_score": PaperProtocol(5000, COCO5K.prompts, "CLIP cosine similarity (not x 100)"),
    "hpsv2": PaperProtocol(5000, COCO5K.prompts, "HPSv2"),
    "pickscore": PaperProtocol(5000, COCO5K.prompts, "PickScore_v1"),
    "imagereward": PaperProtocol(5000, COCO5K.prompts, "ImageReward-v1.0"),
    "aesv2": PaperProtocol(5000, COCO5K.prompts, "LAION aesthetic predictor v2"),
    "geneval": PaperProtocol(553 * 4, "GenEval's 553 prompts x 4 images", "GenEval (Mask2Former, mmdet)"),
    "compbench": PaperProtocol(300 * 10, "T2I-CompBench val: 300 prompts x 10 images per category",
                               "T2I-CompBench (BLIP-VQA, UniDet for spatial, CLIP for non-spatial)"),
}


def paper_protocol(metric: str) -> PaperProtocol | None:
    """The protocol of a DESIGN.md metric name (geneval_* and compbench_* share their benchmark's)."""
    return PAPER_PROTOCOL.get(metric) or PAPER_PROTOCOL.get(metric.split("_")[0])


def paper_family(preset: str | None) -> str | None:
    """The paper family of a train preset, or None (ToyWorld, SD 3.5 Medium: nothing published)."""
    return preset if preset in PAPER_FAMILIES else None


def load_published(path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """Every published cell; raises ValueError naming the file on a malformed table."""
    table = pd.read_csv(path, dtype={"variant": str, "sampler": str}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    table["value"] = pd.to_numeric(table["value"], errors="raise")
    table["nfe"] = pd.to_numeric(table["nfe"], errors="raise").astype(int)
    unknown = sorted(set(table.table) - set(TABLE_ORDER))
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}")
    return table


def published_rows(family: str | None, path: str | Path = PUBLISHED_CSV) -> list[dict]:
    """summary.csv rows `published:<method>` of one paper family (none for other families): one per
    method x metric, from the first table in TABLE_ORDER that reports it, with the paper's image count
    and the table / row it comes from in `source`."""
    if family not in PAPER_FAMILIES:
        return []
    table = load_published(path)
    table = table[table.family == family].copy()
    table["order"] = table.table.map(TABLE_ORDER.index)
    rows = []
    for (method, metric), group in table.sort_values("order", kind="stable").groupby(["method", "metric"],
                                                                                    sort=False):
        first = group.iloc[0]
        protocol = paper_protocol(metric)
        others = [f"{r.table}: {r.value:g}" for r in group.iloc[1:].itertuples() if r.value != first.value]
        rows.append({"variant": PREFIX + method, "family": family, "metric": metric, "value": float(first.value),
                     "n_images": protocol.n_images if protocol else None, "reason": "",
                     "source": f"{first.table}, row '{first.row}' ({first.nfe} NFE"
                               + (f", {first.sampler} sampler" if first.sampler and first.sampler != "teacher" else "")
                               + ")" + (f"; also {'; '.join(others)}" if others else "")})
    return rows


def protocol_warning(metric: str, n_images, *, subset: str = "", tool: str = "") -> str:
    """Why a user's value is not comparable with the paper's (empty when nothing is known to differ):
    fewer images than the paper's protocol, a subset of its prompt set, another detector / judge."""
    protocol = paper_protocol(metric)
    if protocol is None:
        return ""
    parts = []
    try:
        n = int(n_images)
    except (TypeError, ValueError):
        n = None
    if n is not None and n < protocol.n_images:
        parts.append(f"N={n} (paper {protocol.n_images})")
    if subset:
        parts.append(subset)
    if tool:
        parts.append(tool)
    return "; ".join(parts)
