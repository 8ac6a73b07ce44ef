"""train.trackers: dvclive (default), TensorBoard and Weights & Biases (offline) through accelerate,
each tested by the files it writes after a short run on the tiny toy teacher."""
import pytest
import torch

from train.tiny_assets import tiny_settings, toy_assets
from train.senseflow import train


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    torch.set_num_threads(1)
    return toy_assets(tmp_path_factory.mktemp("toy_assets"))


def test_every_tracker_writes_its_files(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(tiny_settings(assets, steps=3, trackers=["dvclive", "tensorboard", "wandb"]), out)
    assert (out / "dvclive" / "plots" / "metrics" / "loss_fake_score.tsv").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard wrote no event file"
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss_fake_score", "loss_dmd", "sample_contrast"} <= tags
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "W&B wrote no offline run"


def test_unknown_tracker_is_refused_before_work(assets, tmp_path):
    from configs.params import ParamsError

    with pytest.raises(ParamsError, match=r"train.trackers\): entry 1: need one of 'dvclive', 'tensorboard', 'wandb'"):
        tiny_settings(assets, trackers=["dvclive", "mlflow"])
