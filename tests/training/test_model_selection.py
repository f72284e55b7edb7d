"""Honest model selection: a validation split held out of the training images picks
best.weights.h5, the eval split only reports, and eval / export default to the final weights."""
import os
import types

import numpy as np
import pytest

from mgdet.data import get_source
from mgdet.data.common import DataError
from mgdet.data.holdout import HeldOutSource, holdout_indices
from mgdet.data.source import RecordSource, Source
from tests import data_files


@pytest.mark.parametrize("n,fraction,n_val", [(10, 0.2, 2), (7, 0.5, 4), (3, 0.01, 1),
                                              (3, 0.99, 2), (1000, 0.1, 100)])
def test_holdout_is_disjoint_complete_and_seeded(n, fraction, n_val):
    train, val = holdout_indices(n, fraction, seed=3)
    assert len(val) == n_val and len(train) == n - n_val
    assert not set(train) & set(val) and sorted(np.concatenate([train, val])) == list(range(n))
    again = holdout_indices(n, fraction, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again))
    if n >= 100:  # another seed, another draw
        assert not np.array_equal(val, holdout_indices(n, fraction, seed=4)[1])


def test_holdout_refuses_what_cannot_be_split():
    with pytest.raises(DataError, match="too few"):
        holdout_indices(1, 0.5, 0)
    with pytest.raises(DataError, match="val_fraction"):
        holdout_indices(10, 1.0, 0)


def _ids(dataset):
    return sorted(int(ex["image_id"]) for ex in dataset.as_numpy_iterator())


def _gt_ids(gt):
    return sorted(im["id"] for im in gt["images"]), sorted({a["image_id"] for a in gt["annotations"]})


def _check_split(source, all_ids):
    """train / val of a HeldOutSource: disjoint, complete, sized, with matching ground truth."""
    train, val = _ids(source.dataset("train", shuffle=True)), _ids(source.dataset("val"))
    assert not set(train) & set(val) and sorted(train + val) == sorted(all_ids)
    assert (source.num_examples("train"), source.num_examples("val")) == (len(train), len(val))
    for split, ids in (("train", train), ("val", val)):
        images, annotated = _gt_ids(source.ground_truth(split))
        assert images == ids and set(annotated) <= set(ids)
    return train, val


def test_synthetic_split_through_get_source_and_steps_from_the_rest():
    cfg = types.SimpleNamespace(source="synthetic", num_train=8, num_eval=2, seed=5,
                                val_fraction=0.25)
    source = get_source(cfg, image_size=64)
    assert isinstance(source, HeldOutSource)
    train, val = _check_split(source, range(1, 9))
    assert len(val) == 2 and source.num_examples("eval") == 2
    assert _ids(get_source(cfg, image_size=64).dataset("val")) == val  # deterministic
    cfg.val_fraction = 0.0
    assert not isinstance(get_source(cfg, image_size=64), HeldOutSource)


class _Records(RecordSource):
    """A file source of 6 JPEGs with one box each (records, not decoding, pick the subset)."""
    name = "test_records"

    def __init__(self, folder):
        super().__init__(types.SimpleNamespace(seed=1), None)
        self.items = []
        for i in range(6):
            path = os.path.join(folder, f"{i}.jpg")
            data_files.jpeg(path, 32, 24, seed=i)
            self.items.append({"path": path, "boxes": np.array([[0.1, 0.1, 0.5, 0.5]], np.float32),
                               "labels": np.array([i % 2], np.int32), "image_id": 10 + i,
                               "width": 32, "height": 24})

    def records(self, split):
        from mgdet.data.common import SourceReport
        return self.items, SourceReport(self.name)

    def class_names(self):
        return ["a", "b"]


class _Generic(Source):
    """Only the base interface: the generic (one pass, filtered) subset is used."""
    name = "test_generic"

    def __init__(self, inner):
        super().__init__(inner.cfg, None)
        self.inner = inner

    def class_names(self):
        return self.inner.class_names()

    def dataset(self, split, shuffle=False):
        return self.inner.dataset(split, shuffle)

    def num_examples(self, split):
        return self.inner.num_examples(split)


@pytest.mark.slow
def test_record_and_generic_sources_split_alike(tmp_path):
    records = _Records(str(tmp_path))
    by_records = _check_split(HeldOutSource(records, 0.5, seed=2), range(10, 16))
    assert _check_split(HeldOutSource(_Generic(records), 0.5, seed=2), range(10, 16)) == by_records


@pytest.mark.slow
def test_a_worker_share_of_the_held_out_train_split(tmp_path):
    """``subset`` of a HeldOutSource (data.worker_sharding: files with data.val_fraction):
    positions within its "train" split, picked before decoding, never a "val" image."""
    records = _Records(str(tmp_path))
    for inner in (records, _Generic(records)):  # picked from the records / in the generic pass
        source = HeldOutSource(inner, 0.5, seed=2)
        train = [10 + int(i) for i in source.train_indices]
        shares = [_ids(source.subset("train", np.arange(k, len(train), 2), shuffle=True))
                  for k in (0, 1)]
        assert shares == [sorted(train[0::2]), sorted(train[1::2])]
        assert not set(shares[0] + shares[1]) & set(_ids(source.dataset("val")))


class _Weights:
    """A model stand-in whose weights file records the epoch it was saved at."""

    def __init__(self):
        self.epoch = 0

    def save_weights(self, path):
        with open(path, "w") as f:
            f.write(str(self.epoch))


def _run_callback(tmp_path, monkeypatch, val):
    """Three evaluated epochs; AP by (split, epoch): eval peaks at 1, validation at 2."""
    from mgdet.training import callbacks as train_mod
    table = {("eval", 1): 0.9, ("eval", 2): 0.1, ("eval", 3): 0.3,
             ("val", 1): 0.1, ("val", 2): 0.5, ("val", 3): 0.2}
    model = _Weights()
    monkeypatch.setattr(train_mod, "evaluate",
                        lambda m, ds, gt, *a, **k: {"AP": table[ds, model.epoch]})
    writer = types.SimpleNamespace(as_default=lambda step: _Null())
    guard = types.SimpleNamespace(stop=None)
    cb = train_mod.EvalCallback(1, 3, "eval", None, writer, str(tmp_path), guard,
                                val=("val", None) if val else None)
    cb.set_model(model)
    for epoch in range(3):
        model.epoch = epoch + 1
        cb.on_epoch_end(epoch, {})
    return cb


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_best_is_chosen_by_validation_ap_not_eval_ap(tmp_path, monkeypatch):
    cb = _run_callback(tmp_path, monkeypatch, val=True)
    assert (cb.best_epoch, cb.best) == (2, 0.5)
    assert (tmp_path / "best.weights.h5").read_text() == "2"  # eval AP would have picked 1
    assert [h["val_AP"] for h in cb.history] == [0.1, 0.5, 0.2]
    assert [h["AP"] for h in cb.history] == [0.9, 0.1, 0.3]


def test_without_a_validation_split_no_best_is_kept(tmp_path, monkeypatch):
    cb = _run_callback(tmp_path, monkeypatch, val=False)
    assert cb.best_epoch is None and not (tmp_path / "best.weights.h5").exists()
    assert [h["AP"] for h in cb.history] == [0.9, 0.1, 0.3]


def test_run_folder_resolves_to_final_weights(tmp_path):
    from mgdet.training.rundir import resolve_weights
    (tmp_path / "best.weights.h5").write_text("best")
    with pytest.raises(FileNotFoundError, match="no final.weights.h5.*best.weights.h5.*explicitly"):
        resolve_weights(str(tmp_path))
    (tmp_path / "final.weights.h5").write_text("final")
    assert resolve_weights(str(tmp_path)) == str(tmp_path / "final.weights.h5")
    assert resolve_weights(str(tmp_path / "best.weights.h5")) == str(tmp_path / "best.weights.h5")


def test_val_fraction_is_validated():
    from mgdet.config import ConfigError, load_config
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="data.val_fraction"):
            load_config(None, [f"data.val_fraction={bad}"])
    assert load_config(None, ["data.val_fraction=0.1"]).data.val_fraction == 0.1
