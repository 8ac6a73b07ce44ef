"""Throughput of the metric code, measured in one run.

    python -m evaluate.bench_metrics [--images 128] [--rounds 3] [--samples results/samples/full-0]
                                     [--reference results/samples/teacher] [--out results/bench/metrics.json]

1. FID feature path: our `measures.frechet.InceptionFeatures` (PNG decode + clean-fid resize +
   Inception) against clean-fid's own `get_folder_features` (its dataset, resize and the same
   TorchScript wrapper) on the same PNG folder, alternating, median images/s over rounds; ratio =
   ours / clean-fid (target >= 1.0). No real Inception weights exist here, so BOTH paths load a
   randomly initialised torchvision Inception-v3 scripted with clean-fid's TorchScript interface:
   the timing is that of the real architecture, and no FID is reported from it.
2. The whole default metric suite on a variant's samples (`evaluate.metrics.run_metrics`, the
   metrics that can run here): images/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_file
from measures.frechet import INCEPTION_FILE, InceptionFeatures
from evaluate.sample_folder import read_samples


class _Pool(torch.nn.Module):
    """torchvision Inception-v3 up to the 2048-d pool (random weights), as `.layers` of the wrapper."""

    def __init__(self):
        super().__init__()
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        self.body = torch.nn.Sequential(*[m for name, m in net.named_children() if name not in ("fc", "dropout")])

    def forward(self, x):
        return self.body(x)


class _ScriptedInception(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = _Pool()

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def random_inception(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / INCEPTION_FILE
    torch.jit.script(_ScriptedInception().eval()).save(str(path))
    return path


def bench_fid_path(n: int, rounds: int, batch: int) -> dict:
    from cleanfid import fid as cf
    from cleanfid.inception_torchscript import InceptionV3W

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = random_inception(tmp)
        rng = np.random.default_rng(0)
        folder = tmp / "images"
        folder.mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        files = sorted(folder.glob("*.png"))
        ours = InceptionFeatures({"inception": str(weights)})
        official_model = InceptionV3W(str(tmp), download=False).eval()

        def run_ours():
            images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            return ours(images, batch)

        def run_official():
            return cf.get_folder_features(str(folder), lambda x: official_model(x), num_workers=0, batch_size=batch,
                                          device=torch.device("cpu"), mode="clean", verbose=False)

        run_ours(), run_official()  # warm-up
        rates = {"ours": [], "clean_fid": []}
        for r in range(rounds):
            for name, fn in ((("ours", run_ours), ("clean_fid", run_official)) if r % 2 == 0
                             else (("clean_fid", run_official), ("ours", run_ours))):
                t0 = time.perf_counter()
                fn()
                rates[name].append(n / (time.perf_counter() - t0))
        a, b = run_ours(), run_official()
        same = bool(np.allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max())))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"images_per_s": med, "images_per_s_rounds": rates, "ratio": med["ours"] / med["clean_fid"],
            "features_identical": same, "images": n, "image_size": [64, 64], "batch_size": batch,
            "weights": "random torchvision Inception-v3 in clean-fid's TorchScript interface (timing only)"}


def bench_suite(params: str, samples: str, reference: str) -> dict:
    from evaluate.metrics import run_metrics

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_metrics(params, samples, reference, tmp)
        seconds = time.perf_counter() - t0
    n = len(read_samples(samples).rows)
    ran = [k for k, v in result["values"].items() if v is not None]
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "metrics_run": ran,
            "metrics_skipped": result["meta"]["skipped"]}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", type=count(2), default=128)
    ap.add_argument("--rounds", type=count(1), default=3)
    ap.add_argument("--batch-size", type=count(1), default=32)
    ap.add_argument("--samples", default="results/samples/full-0")
    ap.add_argument("--reference", default="results/samples/teacher")
    ap.add_argument("--threads", type=count(1), default=2)
    ap.add_argument("--out", default="results/bench/metrics.json")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    torch.set_num_threads(args.threads)
    result = {"fid_feature_path": bench_fid_path(args.images, args.rounds, args.batch_size), "threads": args.threads}
    if Path(args.samples).is_dir() and Path(args.reference).is_dir():
        result["suite"] = bench_suite(args.params, args.samples, args.reference)
    else:
        result["suite"] = {"skipped": f"no samples at {args.samples} / {args.reference} (run dvc repro first)"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    f = result["fid_feature_path"]
    print(f"FID feature path: ours {f['images_per_s']['ours']:.1f} vs clean-fid {f['images_per_s']['clean_fid']:.1f} "
          f"images/s (ratio {f['ratio']:.2f}); suite: {result['suite'].get('images_per_s', 'skipped')}")
    return result


if __name__ == "__main__":
    run_command(main)
