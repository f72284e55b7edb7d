"""The tf.data input pipeline: decoded examples -> padded, batched model inputs.

``make_dataset`` turns any dataset of decoded examples (see :mod:`mgdet.data.common`) into::

    training: (images float32 [B, S, S, 3] in 0..255,
               {"boxes": float32 [B, M, 4], "labels": int32 [B, M], "valid": bool [B, M]})
    eval:     the same, plus "image_id": int64 [B] and "orig_size": int32 [B, 2] (original
              height, width) in the targets dict (what mgdet.evaluation.coco expects).

Per example, in the graph: non-finite and zero/negative-area boxes are dropped, out-of-image
boxes are clipped to [0, 1], then the training augmentation (``augment``: SSD's or the authors')
or a plain resize (eval), then the boxes are
padded — or truncated, keeping the first ``max_objects`` — to ``max_objects``. ``difficult`` /
``is_crowd`` boxes are kept: in training as objects (``difficult="train"``, as the authors) or,
with ``difficult="ignore"``, flagged in an extra ``"ignore"`` target (bool [B, M]) that makes the
anchors they are assigned ignored (neither positive nor background, see
:func:`mgdet.assign.ignore_objects`); evaluation keeps them flagged in the ground truth (ignored
by the metric). The counts land in
:mod:`mgdet.data.stats` under the pipeline's ``name``, those of each pass over the images also
as that pass's (:func:`mgdet.data.stats.last_pass`); truncation also prints one warning.
"""
import logging
import sys
from typing import Callable, NamedTuple

import tensorflow as tf

from mgdet.config import AUGMENT_MODES, DIFFICULT
from mgdet.data import augment as aug
from mgdet.data import stats as data_stats
from mgdet.data.augment_paper import paper_augment
from mgdet.data.common import DataError

log = logging.getLogger("mgdet.data")

DEFAULT_AUGMENT = dict(photometric=True, expand=True, max_expand=4.0, crop=True, flip=True,
                       channel_swap=False)
# data.augment modes (mgdet.config.AUGMENT_MODES but "none") -> (transform, its default keywords,
# other keywords it accepts).
AUGMENT_TRANSFORMS = {
    "ssd": (aug.ssd_augment, DEFAULT_AUGMENT, {"mean", "min_ious", "max_trials", "exact_hsv"}),
    "paper": (paper_augment, dict(max_expand=4.0, expand_p=0.6),
              {"mean", "min_ious", "min_size", "photometric"}),
}


def augment_transform(augment):
    """The training transform chosen by ``augment`` (see :func:`make_dataset`), or None (resize
    only): ``fn(image, boxes, labels, seed, output_size) -> (image, boxes, labels)`` (with
    ``extras={...}``, per-box tensors filtered like ``labels``, a fourth element: that dict)."""
    if augment is False or augment == "none":
        return None
    if augment is None or augment is True:
        augment = "ssd"
    options = dict(augment) if isinstance(augment, dict) else {"mode": augment}
    mode = options.pop("mode", "ssd")
    if mode == "none":
        return None
    if mode not in AUGMENT_TRANSFORMS:
        raise DataError(f"make_dataset: unknown augment mode {mode!r}; use one of "
                        f"{', '.join(AUGMENT_MODES)}")
    fn, defaults, optional = AUGMENT_TRANSFORMS[mode]
    unknown = set(options) - set(defaults) - optional
    if unknown:
        raise DataError(f"make_dataset: unknown {mode!r} augment options {sorted(unknown)}")
    kwargs = {**defaults, **options}
    return lambda image, boxes, labels, seed, size, **extra: fn(image, boxes, labels, seed, size,
                                                                **kwargs, **extra)


def ignore_flags(example):
    """bool ``[K]``: the example's ``difficult`` or ``is_crowd`` boxes (all False without them)."""
    flags = tf.zeros_like(tf.reshape(example["labels"], [-1]), dtype=tf.bool)
    for key in ("difficult", "is_crowd"):
        if key in example:
            flags = flags | tf.cast(tf.reshape(example[key], [-1]), tf.bool)
    return flags


def sanitize(example, counters=None):
    """Drops degenerate boxes and clips the rest to the image (graph mode); ``difficult`` /
    ``is_crowd`` boxes are kept (counted as ``boxes_difficult``).

    Args:
      example: decoded example dict.
      counters: optional :class:`mgdet.data.stats.Counters` to count into.
    Returns:
      the example with filtered ``boxes``, ``labels`` (and ``difficult``/``is_crowd``/``area``).
    """
    boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=1)
    safe = tf.where(finite[:, None], boxes, 0.0)
    clipped = tf.clip_by_value(safe, 0.0, 1.0)
    good = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    was_clipped = good & tf.reduce_any(tf.abs(clipped - safe) > 1e-6, axis=1)
    keep = good
    out = dict(example)
    listed = out.pop(data_stats.LISTED_KEY, None)
    out["boxes"] = tf.boolean_mask(clipped, keep)
    out["labels"] = tf.boolean_mask(tf.reshape(tf.cast(example["labels"], tf.int32), [-1]), keep)
    for key in ("difficult", "is_crowd", "area"):
        if key in example:
            out[key] = tf.boolean_mask(tf.reshape(example[key], [-1]), keep)
    if counters is None:
        return out
    n_boxes = tf.size(good)
    updates = [
        counters.increment("images"),
        counters.increment("images_empty", tf.cast(tf.reduce_sum(tf.cast(keep, tf.int32)) == 0, tf.int32)),
        counters.increment("boxes_in", n_boxes),
        counters.increment("boxes_degenerate", tf.reduce_sum(tf.cast(~good, tf.int32))),
        counters.increment("boxes_clipped", tf.reduce_sum(tf.cast(was_clipped, tf.int32))),
        counters.increment("boxes_difficult",
                           tf.reduce_sum(tf.cast(good & ignore_flags(example), tf.int32))),
    ]
    if listed is not None:  # the same number on every example of a pass: counted_passes adds it
        updates.append(counters.variable("listed_per_pass").assign(tf.cast(listed, tf.int64),
                                                                   read_value=False))
    with tf.control_dependencies(updates):
        return {k: tf.identity(v) for k, v in out.items()}


def pad_targets(boxes, labels, max_objects, counters=None, name="pipeline", ignore=None):
    """Pads (or truncates to the first ``max_objects``) one image's boxes and labels.

    Returns ``{"boxes": [M, 4], "labels": [M] (0 for padding), "valid": [M] bool}``, plus
    ``"ignore": [M] bool`` (False for padding) when ``ignore`` ([K] bool) is given.
    """
    n = tf.shape(labels)[0]
    k = tf.minimum(n, max_objects)
    boxes = tf.pad(boxes[:k], [[0, max_objects - k], [0, 0]])
    labels = tf.pad(labels[:k], [[0, max_objects - k]])
    valid = tf.range(max_objects) < k
    out = {"boxes": tf.ensure_shape(boxes, [max_objects, 4]),
           "labels": tf.ensure_shape(labels, [max_objects]),
           "valid": tf.ensure_shape(valid, [max_objects])}
    if ignore is not None:
        out["ignore"] = tf.ensure_shape(tf.pad(ignore[:k], [[0, max_objects - k]]), [max_objects])
    if counters is None:
        return out
    truncated = n > max_objects
    ops = [counters.increment("boxes_truncated", tf.maximum(n - max_objects, 0)),
           counters.increment("boxes_kept", k)]

    def warn_once():
        count = counters.variable("images_truncated").assign_add(1)
        return tf.cond(tf.equal(count, 1), lambda: _print_truncation(name, n, max_objects),
                       lambda: tf.constant(True))

    ops.append(tf.cond(truncated, warn_once, lambda: tf.constant(True)))
    with tf.control_dependencies(ops):
        return {k_: tf.identity(v) for k_, v in out.items()}


def _print_truncation(name, n, max_objects):
    tf.print("WARNING: mgdet.data pipeline", name, ": an image has", n, "objects; keeping the first",
             max_objects, "(max_objects). Further truncations are only counted (see "
             "mgdet.data.stats.summary()).", output_stream=sys.stderr)
    return tf.constant(True)


class Stream(NamedTuple):
    """A resumable training stream, the source :func:`make_dataset` repeats without state.

    Pass ``p`` over the ``num_examples`` examples reads them in the order
    :func:`pass_order` ``(num_examples, seed, p)``; the ``t``-th example of the stream (all
    passes end to end) is augmented with :func:`augment_seed` ``(seed, t)``. The stream begins
    at example ``start`` (pass ``start // num_examples``, position ``start % num_examples``):
    the examples before it are skipped as positions, before any is read or decoded, so a run
    resumed at global step ``k`` with ``start = k * batch_size`` gets the batches the
    uninterrupted run trains on from step ``k``. An image that fails to decode is skipped and
    the next one takes its place (and its augmentation seed): a run resumed after such a skip
    is one example behind the uninterrupted one for each image skipped before ``start``.
    With ``cache`` the examples are decoded once, in order, and each pass is a buffer of all
    of them reshuffled by a generator seeded with ``seed``; a resumed stream decodes that one
    pass again to fill its cache (as the uninterrupted run's first pass did), then skips the
    earlier examples through the buffer (references to the cached tensors: fast).

    Attributes:
      examples_at: ``positions -> decoded examples`` (``tf.data.Dataset`` of int64 positions in
        the unshuffled split; :meth:`mgdet.data.source.Source.examples_at`).
      num_examples: examples in one pass.
      start: stream position of the first example (int).
    """

    examples_at: Callable
    num_examples: int
    start: int = 0


_ORDER, _AUGMENT = 0x0D3E, 0xA065  # the two stateless random streams keyed by the data seed


def pass_order(num_examples, seed, pass_index):
    """int64 ``[num_examples]``: the order of pass ``pass_index`` (a uniform permutation of
    ``range(num_examples)``), a function of ``(seed, pass_index)`` only (stateless)."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), _ORDER], tf.int64),
                                                   tf.cast(pass_index, tf.int64))
    draws = tf.random.stateless_uniform([num_examples], key, minval=None, maxval=None,
                                        dtype=tf.int64)
    return tf.cast(tf.argsort(draws, stable=True), tf.int64)


def augment_seed(seed, position):
    """int64 ``[2]``: the augmentation seed of stream example ``position`` (stateless)."""
    return tf.random.experimental.stateless_fold_in(tf.constant([int(seed), _AUGMENT], tf.int64),
                                                    tf.cast(position, tf.int64))


def _stream_examples(stream, seed, cache, prepare):
    """The sanitized examples of ``stream`` from its ``start`` on, forever (see
    :class:`Stream`); ``prepare`` sanitizes one pass. Each complete pass is counted
    (:func:`mgdet.data.stats.counted_passes`); a pass entered mid-way is not."""
    n = int(stream.num_examples)
    if n < 1:
        raise DataError("make_dataset: a training stream needs at least one example")
    if cache:
        # Decoded once (the first pass fills the cache), then each pass reorders the cached
        # examples (references, not copies) in a buffer of all of them, reshuffled each pass
        # by a seeded generator: skipping to ``start`` moves references only.
        whole = prepare(stream.examples_at(tf.data.Dataset.range(n))).cache()
        return whole.shuffle(n, seed=int(seed), reshuffle_each_iteration=True).repeat().skip(
            int(stream.start))
    first_pass, skip = divmod(int(stream.start), n)

    def one_pass(p, skip=0):
        positions = tf.data.Dataset.from_tensor_slices(pass_order(n, seed, p)[skip:])
        return prepare(stream.examples_at(positions), counted=not skip)

    rest = tf.data.Dataset.counter(first_pass + 1).flat_map(one_pass)
    return one_pass(first_pass, skip).concatenate(rest)


def make_dataset(source_dataset, image_size, batch_size, max_objects=100, training=True, seed=0,
                 cache=False, shuffle_buffer=256, augment=None, name=None, drop_remainder=None,
                 num_parallel_calls=tf.data.AUTOTUNE, prefetch=tf.data.AUTOTUNE, repeat=False,
                 difficult="train"):
    """Batches a dataset of decoded examples for training or evaluation.

    Args:
      source_dataset: ``tf.data.Dataset`` of decoded examples (any :mod:`mgdet.data` source),
        or a :class:`Stream` (training: a stream that resumes at any example without state;
        it repeats and orders itself: ``shuffle_buffer`` and ``repeat`` do not apply).
      image_size: model input side ``S`` (int).
      batch_size: images per batch (global batch under ``tf.distribute``).
      max_objects: ``M``, boxes per image after padding / truncation.
      training: augmentation, shuffling, ``drop_remainder``; otherwise plain resize and extra
        ``image_id`` / ``orig_size`` targets.
      seed: shuffle and augmentation seed (same seed -> same batches, epoch after epoch).
      cache: cache the sanitized decoded examples in memory (small datasets; pointless for the
        synthetic source, which is in memory already). When the dataset size is known the
        whole cache is reshuffled every epoch (a :class:`Stream`: every pass).
      shuffle_buffer: examples in the shuffle buffer (training; 0 or 1 disables). File sources
        also shuffle their file list (``Source.dataset(split, shuffle=True)``), so a few hundred is
        enough.
      augment: the training transform: ``"ssd"`` (default; ``None`` / ``True`` too),
        ``"paper"`` (the authors' pipeline, :func:`mgdet.data.augment_paper.paper_augment`),
        ``"none"`` / ``False`` (resize only), or a dict ``{"mode": ..., **keywords}`` (mode default
        ``"ssd"``) overriding the mode's keywords (:data:`AUGMENT_TRANSFORMS`).
      name: counter group in :mod:`mgdet.data.stats` (default "train" / "eval").
      drop_remainder: default ``training``.
      repeat: repeat forever (for ``steps_per_epoch`` style loops).
      difficult: training only: ``"train"`` keeps ``difficult`` / ``is_crowd`` boxes as objects
        (the authors), ``"ignore"`` adds the ``"ignore"`` target flagging them.
    Returns:
      ``tf.data.Dataset`` of ``(images, targets)``, see module docstring.
    """
    stream = source_dataset if isinstance(source_dataset, Stream) else None
    if stream is None:
        _check_examples(source_dataset)
    elif not training:
        raise DataError("make_dataset: a Stream is a training source (training=True)")
    image_size, batch_size, max_objects = int(image_size), int(batch_size), int(max_objects)
    if image_size <= 0 or batch_size <= 0 or max_objects <= 0:
        raise DataError(f"make_dataset: image_size, batch_size and max_objects must be positive, "
                        f"got {image_size}, {batch_size}, {max_objects}")
    name = name or ("train" if training else "eval")
    counters = data_stats.counters(name)
    for key in ("images", "boxes_kept", "images_truncated"):
        counters.add(key, 0)  # create eagerly, outside any tf.function / strategy scope
    if difficult not in DIFFICULT:
        raise DataError(f"make_dataset: difficult must be one of {DIFFICULT}, got "
                        f"{difficult!r}")
    flag_ignored = training and difficult == "ignore"
    drop_remainder = training if drop_remainder is None else drop_remainder
    transform = augment_transform(augment) if training else None

    # The map functions are plain TF (explicit tf.cond/while_loop): autograph would only spend
    # start-up time converting them.
    plain = tf.autograph.experimental.do_not_convert

    def prepare(examples, counted=True):
        _check_examples(examples)
        ds = examples.map(plain(lambda ex: sanitize(ex, counters)),
                          num_parallel_calls=num_parallel_calls, deterministic=True)
        # Each pass over the images records its counts (mgdet.data.stats.last_pass), framed
        # before the cache (a cached pass decodes nothing), shuffle and repeat (read-ahead).
        return data_stats.counted_passes(ds, counters) if counted else ds

    if stream is not None:
        ds = _stream_examples(stream, seed, cache, prepare)
        seeds = tf.data.Dataset.counter(int(stream.start)).map(
            plain(lambda t: augment_seed(seed, t)))
        cache = shuffle_buffer = repeat = False  # the stream's own
    else:
        ds = prepare(source_dataset)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    if cache:
        ds = ds.cache()
        # The cache replays its first pass; shuffle all of it when the size is known (the
        # buffer then holds references to the cached tensors, not copies).
        n = int(ds.cardinality())
        if training and n > 0:
            shuffle_buffer = max(int(shuffle_buffer or 0), n)
    if training and shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def _train_map(ex, pair_seed):
        extras = {"ignore": ignore_flags(ex)} if flag_ignored else {}
        if transform is not None and extras:
            image, boxes, labels, extras = transform(ex["image"], ex["boxes"], ex["labels"],
                                                     pair_seed, image_size, extras=extras)
        elif transform is not None:
            image, boxes, labels = transform(ex["image"], ex["boxes"], ex["labels"], pair_seed,
                                             image_size)
        else:
            image, boxes, labels = aug.resize(ex["image"], image_size), ex["boxes"], ex["labels"]
        return image, pad_targets(boxes, labels, max_objects, counters, name,
                                  ignore=extras.get("ignore"))

    def _eval_map(ex):
        image = aug.resize(ex["image"], image_size)
        targets = pad_targets(ex["boxes"], ex["labels"], max_objects, counters, name)
        targets["image_id"] = tf.cast(ex["image_id"], tf.int64)
        targets["orig_size"] = tf.shape(ex["image"])[:2]
        return image, targets

    if training:
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(plain(_train_map), num_parallel_calls=num_parallel_calls, deterministic=True)
    else:
        ds = ds.map(plain(_eval_map), num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(prefetch)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


def _check_examples(ds):
    """DataError unless ``ds`` is a ``tf.data.Dataset`` of decoded examples."""
    if not isinstance(ds, tf.data.Dataset):
        raise DataError(f"make_dataset: source_dataset must be a tf.data.Dataset or a Stream, "
                        f"got {type(ds).__name__}")
    spec = ds.element_spec
    missing = [k for k in ("image", "boxes", "labels", "image_id")
               if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise DataError(f"make_dataset: source examples lack {missing}; expected decoded examples "
                        "{'image','boxes','labels','image_id'} (see mgdet.data.common)")
