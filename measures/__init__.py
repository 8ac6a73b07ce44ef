"""Metric primitives shared by the training-time probe (train.probe) and the evaluation stages
(evaluate, benchmarks): Frechet distance and its feature extractors, CLIP score, and the local
weight lookup that names a missing file. Below train in the import graph."""
