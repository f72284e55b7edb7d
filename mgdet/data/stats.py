"""Graph-safe counters for what the input pipeline drops, clips or skips.

tf.data map functions run in graph mode on background threads, so a Python counter cannot see
them. Each counter here is an int64 resource variable on the CPU, incremented with
``assign_add`` inside the map functions. The variables are created eagerly and outside any
``tf.distribute`` strategy (a plain ``ResourceVariable``, never a mirrored one), so the same
pipeline works under ``MirroredStrategy`` and with ``model.fit``.

Groups:
  ``decode``   images_listed, images_decoded (file sources; the difference is the number of
               images ``ignore_errors`` skipped; exact once an epoch's iterator is exhausted,
               it can run a few elements ahead while one is still being read).
  ``<name>``   one group per :func:`mgdet.data.pipeline.make_dataset` call (``train``, ``eval``):
               images, images_empty, boxes_in, boxes_kept, boxes_degenerate, boxes_clipped,
               boxes_difficult (difficult / crowd, kept), boxes_truncated, images_truncated.

Use :func:`snapshot` for a dict, :func:`summary` for one printable line, :class:`StatsCallback`
to print what changed at each epoch end.
"""
import logging
import threading

import tensorflow as tf

log = logging.getLogger("mgdet.data")

_LOCK = threading.Lock()
_GROUPS = {}


def _new_variable():
    with tf.init_scope(), tf.device("/cpu:0"):
        try:  # a plain variable even inside a tf.distribute strategy scope
            from tensorflow.python.ops import resource_variable_ops
            return resource_variable_ops.ResourceVariable(
                tf.constant(0, tf.int64), trainable=False, name="mgdet_data_counter")
        except (ImportError, AttributeError):  # pragma: no cover - private API moved
            return tf.Variable(tf.constant(0, tf.int64), trainable=False)


class Counters:
    """A named group of int64 counters (see module docstring)."""

    def __init__(self, name):
        self.name = name
        self._vars = {}

    def variable(self, key):
        with _LOCK:
            v = self._vars.get(key)
            if v is None:
                v = self._vars[key] = _new_variable()
            return v

    def increment(self, key, amount=1):
        """An op adding ``amount`` (any int scalar tensor) to ``key``; use inside tf.data maps."""
        return self.variable(key).assign_add(tf.cast(amount, tf.int64), read_value=False)

    def add(self, key, amount=1):
        """Eager increment (also creates the counter)."""
        self.variable(key).assign_add(tf.constant(int(amount), tf.int64), read_value=False)

    def values(self):
        with _LOCK:
            items = list(self._vars.items())
        return {k: int(v.numpy()) for k, v in sorted(items)}

    def reset(self):
        with _LOCK:
            for v in self._vars.values():
                v.assign(tf.constant(0, tf.int64))


def counters(name):
    """The counter group ``name`` (created on first use)."""
    with _LOCK:
        g = _GROUPS.get(name)
        if g is None:
            g = _GROUPS[name] = Counters(name)
        return g


def snapshot():
    """``{group: {counter: int}}`` for every group, with derived ``images_failed_decode``."""
    with _LOCK:
        groups = list(_GROUPS.values())
    out = {g.name: g.values() for g in groups}
    dec = out.get("decode")
    if dec is not None:
        dec["images_failed_decode"] = max(0, dec.get("images_listed", 0) - dec.get("images_decoded", 0))
    return out


def reset():
    """Zero every counter (e.g. between tests)."""
    with _LOCK:
        groups = list(_GROUPS.values())
    for g in groups:
        g.reset()


def diff(new, old):
    """Per-counter difference of two :func:`snapshot` dicts."""
    return {g: {k: v - old.get(g, {}).get(k, 0) for k, v in d.items()} for g, d in new.items()}


def summary(snap=None, skip_zero=True):
    """One line such as ``train: images=4000 boxes_kept=21000 boxes_degenerate=3 | decode: ...``."""
    snap = snapshot() if snap is None else snap
    parts = []
    for g, d in sorted(snap.items()):
        items = [f"{k}={v}" for k, v in sorted(d.items()) if v or not skip_zero]
        if items:
            parts.append(f"{g}: " + " ".join(items))
    return " | ".join(parts) if parts else "no data counters"


try:
    import keras

    class StatsCallback(keras.callbacks.Callback):
        """Prints (or logs) what the input pipelines counted during each epoch.

        Args:
          print_fn: called with one line per epoch (default ``print``).
          groups: restrict to these counter groups (default: all).
        """

        def __init__(self, print_fn=print, groups=None):
            super().__init__()
            self.print_fn = print_fn
            self.groups = groups
            self._last = None

        def on_train_begin(self, logs=None):
            self._last = snapshot()

        def on_epoch_end(self, epoch, logs=None):
            now = snapshot()
            delta = diff(now, self._last or {})
            self._last = now
            if self.groups is not None:
                delta = {g: d for g, d in delta.items() if g in self.groups}
            self.print_fn(f"epoch {epoch + 1} data: {summary(delta)}")
except ImportError:  # pragma: no cover
    StatsCallback = None
