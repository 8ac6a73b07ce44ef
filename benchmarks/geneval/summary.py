"""GenEval's summary (evaluation/summary_scores.py of djghosh13/geneval), as numbers and as the
text it prints: image- and prompt-level accuracy, per-task accuracy (tasks in order of first
appearance), overall = mean of the task accuracies."""
from __future__ import annotations

import numpy as np
import pandas as pd


def summarize(results: pd.DataFrame) -> tuple[dict, str]:
    """(summary dict with geneval_overall / geneval_<task>, the official printout)."""
    df = results
    lines = ["Summary", "=======", f"Total images: {len(df)}", f"Total prompts: {len(df.groupby('metadata'))}",
             f"% correct images: {df['correct'].mean():.2%}",
             f"% correct prompts: {df.groupby('metadata')['correct'].any().mean():.2%}", "",
             "Task breakdown", "=============="]
    task_scores, tasks = [], {}
    for tag, task_df in df.groupby("tag", sort=False):
        score = task_df["correct"].mean()
        task_scores.append(score)
        tasks[tag] = float(score)
        lines.append(f"{tag:<16} = {score:.2%} ({task_df['correct'].sum()} / {len(task_df)})")
    overall = float(np.mean(task_scores))
    lines += ["", f"Overall score (avg. over tasks): {overall:.5f}"]
    summary = {"geneval_overall": overall, **{f"geneval_{t}": v for t, v in tasks.items()},
               "n_images": int(len(df)), "n_prompts": int(len(df.groupby("metadata"))),
               "correct_images": float(df["correct"].mean()),
               "correct_prompts": float(df.groupby("metadata")["correct"].any().mean())}
    return summary, "\n".join(lines) + "\n"


def read_results(path) -> pd.DataFrame:
    """A results.jsonl as the official script reads it."""
    return pd.read_json(path, orient="records", lines=True)


__all__ = ["summarize", "read_results"]
