"""Contracts every layer shares, written once and importing nothing else of ours but configs:
the official SenseFlow dataset JSON (`dataset_json`), the image array / PNG convention
(`images`), and GenEval's decision rules over detected objects (`geneval_rules`)."""
