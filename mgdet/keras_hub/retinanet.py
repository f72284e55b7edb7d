"""``MGRetinaNetObjectDetector``: keras-hub's ``RetinaNetObjectDetector`` trained with mgdet's
label assignment (Mutual Guidance and its ablations) instead of its static IoU encoder.

Only ``compute_loss`` changes. In each training step it makes the labels from the model's own
predictions, then hands them to keras-hub's loss path unchanged (the compiled box and
classification losses, keras-hub's targets and weights layout):

1. anchors: the model's ``anchor_generator`` on the batch's images (pixels);
2. predictions: ``bbox_regression`` decoded by the model's box coding (its label encoder's
   ``encoding_format`` and ``box_variance``, keras' ``decode_deltas_to_boxes``) into the model's
   ``bounding_box_format``, under ``stop_gradient``, as the logits;
3. labels: :func:`mgdet.assign.assign` (``strategy`` iou / l2c / c2l / mg) on the anchors,
   objects and decoded predictions, all xyxy pixels;
4. targets: box targets encoded as keras-hub's encoder encodes them (``encode_box_to_deltas``),
   one-hot classes, per-anchor weights ``1 / #positives`` (ignored anchors weigh 0), as
   keras-hub's ``RetinaNetObjectDetector.compute_loss`` builds them.

Differences from keras-hub's stock encoder (``RetinaNetLabelEncoder``) with ``strategy="iou"``:

- mgdet gives each object its best anchor (``force_match=True``, the paper's rule), so an object
  whose best IoU is below ``pos_iou`` still gets a positive; keras-hub does not.
  ``force_match=False`` reproduces keras-hub's labels exactly
  (tests/keras_hub_mg/test_keras_hub_mg.py).
- an object with a negative label, a label >= ``num_classes`` or a non-finite box is padding
  here; keras-hub matches any box with IoU > 0, whatever its label.
- the box targets of non-positive anchors (weight 0) are 0 here, keras-hub's hold the encoding
  of whatever box the anchor overlaps most.
- the classification and box losses are normalized by their own positive counts (they differ
  under l2c / c2l / mg); keras-hub divides both by the classification positives (the same
  anchors under iou).
"""
import math

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from mgdet import assign as assign_ops
from mgdet import losses as loss_ops

TESTED_KERAS_HUB = "0.32"
_RetinaNet = keras_hub.models.RetinaNetObjectDetector
_BOXES = keras.utils.bounding_boxes
_PIXELS = "xyxy"  # the assignment's coordinates: absolute xyxy, as keras-hub's anchors
_OPTIONS = ("strategy", "sigma", "pos_iou", "neg_iou", "force_match")


@keras.saving.register_keras_serializable(package="mgdet")
class BalancedL1(keras.losses.Loss):
    """Balanced L1 loss (:func:`mgdet.losses.balanced_l1_loss`, Libra R-CNN) for keras-hub's
    box head: ``y_true``, ``y_pred`` ``[B, N, 4]`` encoded offsets -> ``[B, N]`` (mean over the 4
    offsets, as Keras' ``Huber``), then weighted and reduced by Keras (``reduction="sum"``, as
    keras-hub's default box loss)."""

    def __init__(self, alpha=0.5, gamma=1.5, beta=0.11, reduction="sum", name="balanced_l1",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha, self.gamma, self.beta = float(alpha), float(gamma), float(beta)

    def call(self, y_true, y_pred):
        per_offset = loss_ops.balanced_l1_loss(tf.cast(y_pred, tf.float32),
                                               tf.cast(y_true, tf.float32), self.alpha,
                                               self.gamma, self.beta)
        return tf.reduce_mean(per_offset, axis=-1)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma,
                "beta": self.beta}


class _StockPresets:
    """``MGRetinaNetObjectDetector.presets``: keras-hub's RetinaNet presets."""

    def __get__(self, instance, owner):
        return _RetinaNet.presets


@keras.saving.register_keras_serializable(package="mgdet")
class MGRetinaNetObjectDetector(_RetinaNet):
    """keras-hub's RetinaNet whose training labels come from :func:`mgdet.assign.assign`.

    Args:
      backbone, num_classes, **kwargs: as ``keras_hub.models.RetinaNetObjectDetector``.
      strategy: ``"mg"`` (Mutual Guidance), ``"l2c"``, ``"c2l"`` or ``"iou"``
        (``mgdet.assign.PAPER_STRATEGIES``).
      sigma: Classify-to-Localize amplification (> 1).
      pos_iou, neg_iou: IoU-anchor thresholds (they also set MG's per-object counts); None:
        the label encoder's ``positive_threshold`` / ``negative_threshold`` (0.5 / 0.4).
      force_match: give every object its best anchor (mgdet's rule). False: keras-hub's
        encoder's rule, an object whose best IoU is below ``pos_iou`` may get no positive.

    ``compile(box_loss="balanced_l1")`` trains the box head with :class:`BalancedL1`; any other
    argument is keras-hub's ``ObjectDetector.compile``. Start from a keras-hub model with
    :meth:`from_preset` or :meth:`from_detector`.
    """

    # keras-hub's ObjectDetector.from_preset picks the registered ObjectDetector subclass whose
    # backbone_cls is the preset's backbone, in no fixed order: this class must not be a
    # candidate, or `keras_hub.models.ObjectDetector.from_preset(<a RetinaNet preset>)` could
    # return it. Its own from_preset goes through RetinaNetObjectDetector's.
    backbone_cls = None
    presets = _StockPresets()

    def __init__(self, backbone, num_classes, strategy="mg", sigma=2.0, pos_iou=None,
                 neg_iou=None, force_match=True, **kwargs):
        if strategy not in assign_ops.PAPER_STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not available for keras-hub's RetinaNet: "
                             f"use one of {assign_ops.PAPER_STRATEGIES}")
        encoder = kwargs.get("label_encoder")
        pos_iou = float(getattr(encoder, "positive_threshold", 0.5) if pos_iou is None
                        else pos_iou)
        neg_iou = float(getattr(encoder, "negative_threshold", 0.4) if neg_iou is None
                        else neg_iou)
        assign_ops.validate(strategy, sigma, pos_iou, neg_iou)
        if not isinstance(force_match, bool):
            raise ValueError(f"force_match must be True or False, got {force_match!r}")
        super().__init__(backbone, num_classes, **kwargs)
        self.strategy, self.sigma = strategy, float(sigma)
        self.pos_iou, self.neg_iou, self.force_match = pos_iou, neg_iou, force_match

    def compile(self, optimizer="auto", box_loss="auto", classification_loss="auto",
                metrics=None, **kwargs):
        """keras-hub's ``compile``; ``box_loss="balanced_l1"``: :class:`BalancedL1`."""
        if isinstance(box_loss, str) and box_loss == "balanced_l1":
            box_loss = BalancedL1()
        super().compile(optimizer=optimizer, box_loss=box_loss,
                        classification_loss=classification_loss, metrics=metrics, **kwargs)

    # --- training ----------------------------------------------------------------------------

    def anchors(self, images):
        """``[N, 4]`` anchors of ``images`` (``[B, H, W, C]``) from the model's
        ``anchor_generator``, levels concatenated in output order, in its box format."""
        return keras.ops.concatenate(list(self.anchor_generator(images).values()), axis=0)

    def decode_boxes(self, images, anchors, deltas):
        """``bbox_regression`` ``[B, N, 4]`` -> boxes ``[B, N, 4]`` in the model's
        ``bounding_box_format``, by the model's box coding (its label encoder's)."""
        height, width, channels = images.shape[1:]
        return _BOXES.decode_deltas_to_boxes(
            anchors=anchors, boxes_delta=deltas,
            anchor_format=self.anchor_generator.bounding_box_format,
            box_format=self.bounding_box_format,
            encoded_format=self.label_encoder.encoding_format,
            variance=self.label_encoder.box_variance, image_shape=(height, width, channels))

    def assign_labels(self, images, y, y_pred):
        """The :class:`mgdet.assign.Assignment` of a batch, and its anchors and objects.

        Args:
          images: ``[B, H, W, C]``; y: ``{"boxes": [B, M, 4] in bounding_box_format,
            "labels": [B, M]}`` with ``-1`` padding; y_pred: the model's outputs.
        Returns:
          ``(assignment, anchors [N, 4], boxes [B, M, 4])``, anchors and boxes xyxy pixels.
        """
        if not isinstance(y, dict) or "boxes" not in y or "labels" not in y:
            raise ValueError("MGRetinaNetObjectDetector trains on (images, {'boxes', 'labels'}) "
                             f"pairs, got targets {type(y).__name__}"
                             + (f" with keys {sorted(y)}" if isinstance(y, dict) else ""))
        height, width = images.shape[1], images.shape[2]

        def to_pixels(boxes, source):
            return tf.cast(_BOXES.convert_format(boxes, source=source, target=_PIXELS,
                                                 height=height, width=width), tf.float32)

        anchors = self.anchors(images)
        boxes = to_pixels(y["boxes"], self.bounding_box_format)
        labels = tf.cast(y["labels"], tf.int32)
        valid = ((labels >= 0) & (labels < self.num_classes)
                 & tf.reduce_all(tf.math.is_finite(boxes), axis=-1))
        boxes = tf.where(valid[..., None], boxes, 0.0)
        deltas = tf.stop_gradient(tf.cast(y_pred["bbox_regression"], tf.float32))
        predicted = to_pixels(self.decode_boxes(images, anchors, deltas),
                              self.bounding_box_format)
        predicted = tf.where(tf.math.is_finite(predicted), predicted, 0.0)  # exp overflow
        anchors = to_pixels(anchors, self.anchor_generator.bounding_box_format)
        assignment = assign_ops.assign(
            self.strategy, anchors, boxes, labels, valid,
            pred_logits=tf.stop_gradient(y_pred["cls_logits"]), pred_boxes=predicted,
            sigma=self.sigma, pos_iou=self.pos_iou, neg_iou=self.neg_iou,
            force_match=self.force_match)
        return assignment, anchors, boxes

    def training_targets(self, images, y, y_pred):
        """``(y_true, sample_weight)`` that :meth:`compute_loss` hands to keras-hub's losses.

        Returns:
          y_true: ``{"bbox_regression": [B, N, 4] encoded box targets (0 at non-positives),
          "cls_logits": [B, N, C] one-hot (all 0 at negatives and ignored anchors)}``;
          sample_weight: ``{"bbox_regression": [B, N] 1/#regression positives at them, else 0,
          "cls_logits": [B, N] 1/#classification positives except 0 at ignored anchors}``; a
          loss whose positive count is 0 gets weight 0 everywhere (keras-hub's rule).
        """
        assignment, anchors, boxes = self.assign_labels(images, y, y_pred)
        reg_positive = assignment.reg_positive
        matched = tf.gather(boxes, tf.maximum(assignment.reg_gt_index, 0), batch_dims=1)
        # a non-positive anchor's target is itself (offsets 0; its weight is 0)
        matched = tf.where(reg_positive[..., None], matched, anchors[None])
        box_targets = _BOXES.encode_box_to_deltas(
            anchors=anchors, boxes=matched, anchor_format=_PIXELS, box_format=_PIXELS,
            encoding_format=self.label_encoder.encoding_format,
            variance=self.label_encoder.box_variance, image_shape=tuple(images.shape[1:]))
        cls_labels = assignment.cls_labels
        y_true = {"bbox_regression": box_targets,
                  "cls_logits": tf.one_hot(cls_labels, self.num_classes)}  # -1, -2: zeros
        sample_weight = {
            "bbox_regression": _normalized(tf.cast(reg_positive, tf.float32), reg_positive),
            "cls_logits": _normalized(tf.cast(cls_labels != assign_ops.IGNORED, tf.float32),
                                      cls_labels >= 0)}
        return y_true, sample_weight

    def compute_loss(self, x, y, y_pred, sample_weight=None, **kwargs):
        """keras-hub's losses on the labels of :meth:`training_targets` (``sample_weight`` is
        replaced by the per-anchor weights, as keras-hub's ``compute_loss`` does)."""
        y_true, weights = self.training_targets(x, y, y_pred)
        # skip RetinaNetObjectDetector.compute_loss (its encoder): Keras' compiled losses
        return super(_RetinaNet, self).compute_loss(x=x, y=y_true, y_pred=y_pred,
                                                    sample_weight=weights, **kwargs)

    # --- construction and serialization ------------------------------------------------------

    @classmethod
    def from_detector(cls, detector, **options):
        """A copy of a keras-hub ``RetinaNetObjectDetector`` (weights, anchors, box coding,
        preprocessor, decoder) trained with mgdet's assignment.

        Args:
          detector: a built ``keras_hub.models.RetinaNetObjectDetector``.
          **options: ``strategy``, ``sigma``, ``pos_iou``, ``neg_iou``, ``force_match``
            (defaults as the constructor, or the detector's own if it is already one).
        Returns:
          an ``MGRetinaNetObjectDetector`` compiled with keras-hub's defaults.
        """
        if not isinstance(detector, _RetinaNet):
            raise ValueError("from_detector takes a keras_hub.models.RetinaNetObjectDetector, "
                             f"got {type(detector).__name__}")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}: use {list(_OPTIONS)}")
        config = {**detector.get_config(), **options}
        config.setdefault("activation", detector.activation)  # not in keras-hub's config
        model = cls.from_config(config)
        model.set_weights(detector.get_weights())
        return model

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """``RetinaNetObjectDetector.from_preset(preset, load_weights, **kwargs)`` turned into
        this class (:meth:`from_detector`); ``kwargs`` may also hold this class's options
        (``strategy``, ...)."""
        options = {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}
        return cls.from_detector(_RetinaNet.from_preset(preset, load_weights=load_weights,
                                                        **kwargs), **options)

    def get_config(self):
        return {**super().get_config(), "strategy": self.strategy, "sigma": self.sigma,
                "pos_iou": self.pos_iou, "neg_iou": self.neg_iou,
                "force_match": self.force_match}


def small_retinanet(num_classes, image_size=64, bounding_box_format="yxyx", mg=True,
                    filters=(64, 16, 32, 64), head_convs=1, **kwargs):
    """A keras-hub RetinaNet on a small random-weight ResNet (basic blocks, one per stage),
    levels P3-P7 and keras-hub's default anchors (9 per location): for tests, benchmarks and CPU
    experiments. Its FPN and heads keep keras-hub's 256 channels.

    Args:
      num_classes: C. image_size: square input side in pixels.
      bounding_box_format: the model's box format. mg: build an :class:`MGRetinaNetObjectDetector`
        (``kwargs`` may hold its options), else keras-hub's ``RetinaNetObjectDetector``.
      filters: channels of the 4 ResNet stages (keras-hub requires 64 first).
      head_convs: convolutions before each head's output layer (keras-hub's default is 4).
    """
    shape = (int(image_size), int(image_size), 3)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=list(filters),
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block", image_shape=shape)
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=7, use_p5=False, image_shape=shape)
    cls = MGRetinaNetObjectDetector if mg else _RetinaNet
    return cls(backbone=backbone, num_classes=num_classes,
               bounding_box_format=bounding_box_format, pre_logits_num_conv_layers=head_convs,
               **kwargs)


def set_head_priors(model, prior_probability=0.01):
    """Set the output biases of a keras-hub RetinaNet's heads as RetinaNet (Lin et al., 2017)
    initializes them: the class head's at ``-log((1 - p) / p)`` (every class starts at
    probability ``p``) and the box head's at 0 (every box starts as its anchor).

    keras-hub 0.32 builds them the other way around (the prior on ``box_head``, zeros on
    ``classification_head``): training from random weights then starts with every class at
    p = 0.5 and every box at exp(-4.6) = 1 % of its anchor's size. For training from scratch; a
    preset's trained weights need no change. Changes only those two bias vectors, in place.

    Args:
      model: a built keras-hub ``RetinaNetObjectDetector`` (or this module's subclass).
      prior_probability: ``p`` in (0, 1).
    Returns:
      ``model``.
    """
    if not 0.0 < prior_probability < 1.0:
        raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
    for head, value in (("box_head", 0.0),
                        ("classification_head",
                         -math.log((1.0 - prior_probability) / prior_probability))):
        bias = model.get_layer(head).prediction_layer.bias
        bias.assign(np.full(bias.shape, value, bias.dtype))
    return model


def _normalized(weight, positive):
    """``weight / #positive`` (summed over the batch), all 0 when there is no positive."""
    count = tf.reduce_sum(tf.cast(positive, tf.float32))
    return tf.where(count > 0, weight / tf.maximum(count, 1.0), 0.0)
