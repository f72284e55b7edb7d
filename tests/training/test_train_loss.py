"""A short run of the public ``mgdet.train`` on the embedded synthetic data learns: the training
loss of the last epoch is well below the first's (a run whose learning rate is ~0 stays put)."""
import numpy as np
import pytest

import mgdet
from mgdet.config import load_config

pytestmark = pytest.mark.slow  # trains for 4 epochs

TINY = ["model.image_size=64", "model.width=0.125", "data.num_train=48", "data.num_eval=8",
        "data.max_objects=10", "train.batch_size=8", "train.epochs=4", "train.warmup_steps=2",
        "train.eval_every=0", "eval.batch_size=8", "eval.max_detections=20"]


def epoch_losses(log_dir):
    """The ``epoch_loss`` scalars of a run's ``logs/train`` (TensorBoard), by epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    if "epoch_loss" in acc.Tags().get("scalars", []):
        return [e.value for e in acc.Scalars("epoch_loss")]
    return [float(np.asarray(e.tensor_proto.float_val or
                             [np.frombuffer(e.tensor_proto.tensor_content, np.float32)[0]])[0])
            for e in acc.Tensors("epoch_loss")]


def test_training_loss_falls(tmp_path):
    result = mgdet.train(load_config("default", TINY), out_dir=str(tmp_path), verbose=0)
    assert result["steps"] == 4 * 6
    losses = epoch_losses(tmp_path / "logs" / "train")
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    # measured: 2.64 -> 1.97 (x 0.75) at the default lr 3e-3; 2.75 -> 2.71 (x 0.98) with
    # train.lr, warmup_lr and min_lr at 1e-9
    assert losses[-1] < 0.85 * losses[0], losses
