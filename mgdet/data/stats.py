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

These are running totals of everything the pipeline has read, and a training stream repeats
and reads ahead (prefetch, parallel maps), so at an epoch's end they include images of the next
passes. What happened to the data is counted per pass over the images instead: each pipeline
frames its passes with :func:`counted_passes`, which records the :data:`PASS_KEYS` counted
during each complete pass (``images_listed``: the source's images of that pass,
``images_failed_decode``: those that did not decode; ``images`` and ``boxes_*``: as above,
before augmentation). :func:`last_pass` reads them back.

Use :func:`snapshot` for a dict, :func:`summary` for one printable line, :class:`StatsCallback`
to print, at each epoch end, the counts of the last pass over the images completed since.
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


# What one pass over the images counts (sanitize, before augmentation), in the order printed.
PASS_KEYS = ("images_listed", "images_failed_decode", "images", "images_empty", "boxes_in",
             "boxes_degenerate", "boxes_clipped", "boxes_difficult")
_COUNTED = tuple(k for k in PASS_KEYS if k != "images_failed_decode")  # the rest: derived
LISTED_KEY = "num_listed"  # per decoded example: images its source lists per pass (file sources)


class Counters:
    """A named group of int64 counters (see module docstring)."""

    def __init__(self, name):
        self.name = name
        self._vars = {}
        self._pass = None  # (totals at the current pass's start, [passes, last pass's counts])

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
            for v in list(self._vars.values()) + list(self._pass or ()):
                v.assign(tf.zeros_like(v))

    def pass_state(self):
        """``(start, last)``: the totals when the current pass began, and ``[passes, counts of
        the last complete pass...]`` (one variable, written in one op); created eagerly."""
        with _LOCK:
            if self._pass is None:
                with tf.init_scope(), tf.device("/cpu:0"):
                    self._pass = tuple(tf.Variable(tf.zeros([n], tf.int64), trainable=False,
                                                   name="mgdet_data_pass")
                                       for n in (len(_COUNTED), 1 + len(PASS_KEYS)))
            return self._pass


def counted_passes(ds, group):
    """``ds`` (one pass of a pipeline's sanitized examples) framed so that each complete pass
    over it records the :data:`PASS_KEYS` of ``group`` counted during that pass, read back by
    :func:`last_pass`: an iteration left unfinished (a peek at the first batch) counts toward
    no pass. ``images_listed`` grows by the ``listed_per_pass`` the pipeline sets,
    ``images_failed_decode`` is the listed images that produced no example. Element spec and
    known cardinality are those of ``ds``."""
    start, last = group.pass_state()
    for key in _COUNTED + ("listed_per_pass",):
        group.variable(key)  # eagerly, outside the tf.data functions

    def totals():
        return tf.stack([group.variable(k).read_value() for k in _COUNTED])

    def begin(_):
        # the group is shared by name (``train``) across pipelines of one process: a pass whose
        # source lists no files must not add the listed count an earlier file source left
        with tf.control_dependencies([
                start.assign(totals(), read_value=False),
                group.variable("listed_per_pass").assign(tf.constant(0, tf.int64),
                                                         read_value=False)]):
            return tf.constant(False)

    def finish(_):
        listed = group.increment("images_listed", group.variable("listed_per_pass"))
        with tf.control_dependencies([listed]):
            counts = dict(zip(_COUNTED, tf.unstack(totals() - start)))
        # a source that lists no files (synthetic) sets no listed count: 0 failed
        counts["images_failed_decode"] = tf.maximum(counts["images_listed"] - counts["images"], 0)
        record = tf.concat([last[:1] + 1, tf.stack([counts[k] for k in PASS_KEYS])], 0)
        with tf.control_dependencies([last.assign(record, read_value=False)]):
            return tf.constant(False)

    def marker(fn):  # no elements; running ``fn`` when the iteration reaches it
        def empty(spec):
            shape = [0 if d is None else d for d in spec.shape] if spec.shape.rank else []
            return tf.zeros(shape, spec.dtype)
        plain = tf.autograph.experimental.do_not_convert
        return tf.data.Dataset.range(1).filter(plain(fn)).map(
            plain(lambda _: tf.nest.map_structure(empty, ds.element_spec)))

    framed = marker(begin).concatenate(ds).concatenate(marker(finish))
    if not tf.executing_eagerly():  # built inside a tf.data function (a stream's pass)
        return framed
    size = ds.cardinality()
    return framed.apply(tf.data.experimental.assert_cardinality(size)) if size >= 0 else framed


def last_pass(name):
    """``(passes, {key: count})``: how many passes of the pipeline ``name`` were complete, and
    the :data:`PASS_KEYS` counts of the last one (``(0, {})`` before the first)."""
    with _LOCK:
        group = _GROUPS.get(name)
    if group is None or group._pass is None:
        return 0, {}
    state = group._pass[1].numpy()  # one read of the one variable a pass end writes
    passes = int(state[0])
    return passes, (dict(zip(PASS_KEYS, map(int, state[1:]))) if passes else {})


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
        """Prints, at each epoch end, what the last pass over each pipeline's images completed
        since the previous line counted (see the module docstring: one pass, not the images
        read ahead), e.g. ``epoch 3 data: train (one pass over the images): images_listed=26
        images_failed_decode=2 images=24 boxes_in=48``. Nothing when no pass ended.

        Args:
          print_fn: called with one line per epoch (default ``print``).
          groups: restrict to these pipelines (default: all).
        """

        def __init__(self, print_fn=print, groups=None):
            super().__init__()
            self.print_fn = print_fn
            self.groups = groups
            self._seen = {}

        def _names(self):
            with _LOCK:
                names = sorted(_GROUPS)
            return [n for n in names if self.groups is None or n in self.groups]

        def on_train_begin(self, logs=None):
            self._seen = {n: last_pass(n)[0] for n in self._names()}

        def on_epoch_end(self, epoch, logs=None):
            parts = []
            for name in self._names():
                passes, counts = last_pass(name)
                if passes > self._seen.get(name, 0):
                    self._seen[name] = passes
                    parts.append(f"{name} (one pass over the images): " + " ".join(
                        f"{k}={v}" for k, v in counts.items() if v or k == "images"))
            if parts:
                self.print_fn(f"epoch {epoch + 1} data: " + " | ".join(parts))
except ImportError:  # pragma: no cover
    StatsCallback = None
