"""``Detector``: the Keras model shared by FSSD, RetinaNet and RFBNet.

    images float32 [B, S, S, 3] RGB 0..255
      -> ImageNet normalization (inside the model; ``input_norm="bgr_mean"``: the authors')
      -> backbone sources -> neck (per subclass) -> pyramid levels (strides 8, 16, 32, 64[, 128])
      -> head -> (deltas [B, N, 4], logits [B, N, C])      N = mgdet.ops.anchors.num_anchors(S)

Training (``train_step``): forward -> label assignment (``mgdet.assign.assign``, predictions under
``stop_gradient``) -> focal + balanced-L1 loss (``mgdet.losses.detection_loss``) -> gradients ->
``optimizer.apply``. Weight decay belongs to the optimizer (``mgdet.training.optim.SGDWithL2``),
not here. ``test_step`` reports the same losses; ``predict_step`` / ``detect`` return final
detections (decode + class-wise NMS, ``mgdet.ops.postprocess``).

Metrics: ``loss``, ``cls_loss``, ``reg_loss`` (means over steps of the global-batch losses),
``num_pos_cls``, ``num_pos_reg`` (mean positives per global batch) and ``targets_dropped`` (the
objects of the epoch's targets that could not be trained on,
:func:`mgdet.models.steps.drop_invalid_objects`). Under ``tf.distribute`` each replica's loss is
its share of the global loss (the loss normalizers are all-reduced), Keras sums the replicas'
gradients, and the metrics report global values.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from mgdet.config.schema import INPUT_NORMS
from mgdet.ops import anchors as anchor_ops
from mgdet import assign as assign_ops
from mgdet import losses as loss_ops
from mgdet.ops import targets as target_ops
from mgdet.models.backbones import BACKBONES, build_backbone, load_backbone_weights
from mgdet.models.steps import check_arguments, drop_invalid_objects, reducible_logs
from mgdet.models.heads import DetectionHead
from mgdet.ops.postprocess import postprocess

# torchvision's ImageNet statistics, on the 0..255 scale.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The authors' evaluation input (their BaseTransform): OpenCV's BGR pixels minus these means,
# 0..255, not scaled.
BGR_MEAN = (104.0, 117.0, 123.0)


def normalize_images(images, input_norm="imagenet"):
    """RGB 0..255 ``[B, S, S, 3]`` -> the network's input: ``"imagenet"``: ``(x - mean) / std``
    with torchvision's ImageNet statistics (mgdet's backbones); ``"bgr_mean"``: channels
    reversed to BGR, minus :data:`BGR_MEAN` (the paper authors' released detectors)."""
    x = keras.ops.cast(images, "float32")
    if input_norm == "bgr_mean":
        return keras.ops.flip(x, axis=-1) - keras.ops.array(BGR_MEAN, "float32")
    return (x - keras.ops.array(IMAGENET_MEAN, "float32")) / keras.ops.array(IMAGENET_STD,
                                                                             "float32")

METRIC_NAMES = ("loss", "cls_loss", "reg_loss", "num_pos_cls", "num_pos_reg", "targets_dropped")


@keras.saving.register_keras_serializable(package="mgdet")
class Detector(keras.Model):
    """Anchor-based single-stage detector trained with a configurable label assignment.

    Subclasses set ``arch`` and implement ``_make_neck(source_strides, source_channels,
    num_levels, width)`` returning a layer that maps the backbone sources to the pyramid levels.

    Args:
      num_classes: C, object classes (no background class).
      backbone: ``"vgg16"`` or ``"resnet18"``.
      image_size: S, square input side in pixels (a multiple of 64, 64 to 2048).
      width: channel multiplier of backbone and neck (1.0 = the paper's models).
      strategy: label assignment, one of ``mgdet.assign.STRATEGIES`` (``"mg"`` = Mutual
        Guidance; ``"atss"``, ``"tal"``: see ``mgdet.assign.adaptive``).
      sigma: Classify-to-Localize amplification (> 1).
      pos_iou, neg_iou: IoU-anchor thresholds (they also set the per-object counts of MG).
      atss_topk: ATSS's candidate cells per level.
      tal_topk, tal_alpha, tal_beta: TAL's candidates per object and metric exponents.
      focal_alpha, focal_gamma: focal loss.
      cls_loss: ``"focal"``, ``"quality_focal"`` (against TAL's soft targets) or ``"auto"``
        (``mgdet.losses.resolve_cls_loss``: quality focal for ``tal``, focal otherwise).
      qfl_beta: the quality focal loss's exponent.
      bl1_alpha, bl1_gamma, bl1_beta: balanced L1 loss.
      score_threshold, nms_iou, max_detections: post-processing of ``detect``/``predict``.
      weights: optional ``.npz`` backbone weights (see ``mgdet.models.backbones``); random
        initialization when None.
      sync_bn: under ``tf.distribute``, batch-norm statistics over the global batch (all
        replicas), so that N replicas train exactly as one device on the global batch. False:
        per-replica statistics (fewer all-reduces). No effect on one device.
      clip_anchors: clip anchor corners to the image (not the authors' anchors; for the
        old-vs-new anchors ablation). False: anchors as in the authors' code.
      input_norm: ``"imagenet"`` (default) or ``"bgr_mean"`` (:func:`normalize_images`).
      bounding_box_format: the boxes of training targets and of :meth:`predict` outputs, one of
        ``mgdet.ops.targets.BOX_FORMATS`` (keras-hub's names; absolute ones are pixels of the S x S
        input). Default ``rel_xyxy``, what mgdet's own pipeline makes. Targets may also be
        keras-hub's ``{"boxes", "labels" or "classes"}`` with ``-1`` padding
        (:func:`mgdet.ops.targets.standardize_targets`). Objects that cannot be trained on (a NaN
        or infinite coordinate, no area inside the image, a label >= ``num_classes``) are
        dropped, not trained on and not an error, and counted in the ``targets_dropped``
        metric (objects per epoch, all replicas), as the file pipeline skips and counts them.
      class_names: one name per class (saved with the model, so that a ``.keras`` file names
        its detections); None: unnamed.

    The numeric arguments are checked against the ranges of their config keys
    (:func:`mgdet.models.steps.check_arguments`, :mod:`mgdet.config.schema`: e.g.
    ``image_size`` a multiple of 64 in [64, 2048], ``score_threshold`` in [0, 1)); a value
    outside raises :class:`mgdet.config.ConfigError` (a ``ValueError``) naming the argument.
    """

    arch = None
    backbones = BACKBONES

    def __init__(self, num_classes, backbone="vgg16", image_size=320, width=1.0, strategy="mg",
                 sigma=2.0, pos_iou=0.5, neg_iou=0.4, focal_alpha=0.25, focal_gamma=2.0,
                 bl1_alpha=0.5, bl1_gamma=1.5, bl1_beta=0.11, score_threshold=0.005,
                 nms_iou=0.5, max_detections=300, weights=None, sync_bn=True, clip_anchors=False,
                 bounding_box_format="rel_xyxy", class_names=None, atss_topk=9, tal_topk=13,
                 tal_alpha=1.0, tal_beta=6.0, cls_loss="auto", qfl_beta=2.0, input_norm="imagenet",
                 **kwargs):
        kwargs.setdefault("name", self.arch or "detector")
        super().__init__(**kwargs)
        if type(self) is Detector or self.arch is None:
            raise TypeError("Detector is a base class: build FSSD, RetinaNet or RFBNet")
        check_arguments(num_classes=num_classes, image_size=image_size, width=width,
                        qfl_beta=qfl_beta, focal_alpha=focal_alpha, focal_gamma=focal_gamma,
                        bl1_alpha=bl1_alpha, bl1_gamma=bl1_gamma, bl1_beta=bl1_beta,
                        score_threshold=score_threshold, nms_iou=nms_iou,
                        max_detections=max_detections)
        if backbone not in self.backbones:
            raise ValueError(f"unknown backbone {backbone!r} for {type(self).__name__}: use one "
                             f"of {self.backbones}")
        assign_ops.validate(strategy, sigma, pos_iou, neg_iou, atss_topk, tal_topk, tal_alpha,
                            tal_beta)
        self.cls_loss = loss_ops.resolve_cls_loss(cls_loss, strategy)
        if not isinstance(sync_bn, bool):
            raise ValueError(f"sync_bn must be True or False, got {sync_bn!r}")
        if not isinstance(clip_anchors, bool):
            raise ValueError(f"clip_anchors must be True or False, got {clip_anchors!r}")
        target_ops.check_box_format(bounding_box_format)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if class_names is not None:
            class_names = tuple(str(n) for n in class_names)
            if len(class_names) != int(num_classes):
                raise ValueError(f"class_names has {len(class_names)} names for num_classes "
                                 f"{num_classes}")
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"weights must be a path to an .npz file or None, got {weights!r}")

        self.num_classes = int(num_classes)
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.width = float(width)
        self.strategy = strategy
        self.sigma = float(sigma)
        self.pos_iou, self.neg_iou = float(pos_iou), float(neg_iou)
        self.atss_topk, self.tal_topk = int(atss_topk), int(tal_topk)
        self.tal_alpha, self.tal_beta = float(tal_alpha), float(tal_beta)
        self.qfl_beta = float(qfl_beta)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.bl1_alpha, self.bl1_gamma = float(bl1_alpha), float(bl1_gamma)
        self.bl1_beta = float(bl1_beta)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.sync_bn = sync_bn
        self.num_levels = anchor_ops.num_levels(self.image_size)
        self.feature_sizes = anchor_ops.feature_sizes(self.image_size)
        self.clip_anchors = clip_anchors
        self.input_norm = input_norm
        self.bounding_box_format = bounding_box_format
        self.class_names = class_names
        self._anchors = anchor_ops.generate_anchors(self.image_size, clip=clip_anchors)  # [N, 4]

        self.backbone = build_backbone(backbone, self.width)
        self.neck = self._make_neck(self.backbone.strides, self.backbone.out_channels,
                                    self.num_levels, self.width)
        self.head = DetectionHead(self.num_levels, self.num_classes, name="head")
        for layer in self._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = sync_bn
        self._trackers = [keras.metrics.Mean(name=n) for n in METRIC_NAMES[:-1]]
        self._trackers.append(keras.metrics.Sum(name=METRIC_NAMES[-1]))  # objects, summed
        self._detect_function = None

        self.build((None, self.image_size, self.image_size, 3))
        if weights is not None:
            load_backbone_weights(self.backbone, os.fspath(weights))

    def _make_neck(self, source_strides, source_channels, num_levels, width):
        """The subclass's neck: backbone sources -> ``num_levels`` pyramid levels."""
        raise TypeError(f"{type(self).__name__} must define _make_neck (see FSSD, RetinaNet, "
                        "RFBNet)")

    # --- forward ---------------------------------------------------------------------------

    @property
    def anchors(self):
        """float32 [N, 4] xyxy normalized anchors (the order of the outputs' N axis)."""
        return self._anchors

    @property
    def num_anchors(self):
        return int(self._anchors.shape[0])

    def build(self, input_shape):
        if self.built:
            return
        self.built = True  # so that the symbolic call below does not come back here
        try:
            self(keras.KerasTensor(tuple(input_shape), "float32"))  # creates every variable
        except Exception:
            self.built = False
            raise

    def call(self, images, training=None):
        """``images`` [B, S, S, 3] RGB 0..255 -> ``(deltas [B, N, 4], logits [B, N, C])``."""
        size = tuple(images.shape[1:3])
        if None not in size and size != (self.image_size, self.image_size):
            raise ValueError(f"{type(self).__name__} was built for {self.image_size}x"
                             f"{self.image_size} images, got {size[0]}x{size[1]}: resize them "
                             "first")
        x = normalize_images(images, self.input_norm)
        sources = self.backbone(x, training=training)
        levels = self.neck(sources, training=training)
        for k, (level, f) in enumerate(zip(levels, self.feature_sizes)):
            if tuple(level.shape[1:3]) != (f, f) and None not in level.shape[1:3]:
                raise AssertionError(f"level {k} is {tuple(level.shape[1:3])}, anchors expect "
                                     f"{(f, f)}")
        return self.head(levels)

    # --- training ----------------------------------------------------------------------------

    def compute_detection_loss(self, targets, deltas, logits):
        """Label assignment + losses of one (replica's) batch.

        Args:
          targets: dict ``boxes`` [B, M, 4], ``labels`` [B, M], ``valid`` [B, M], optional
            ``ignore`` [B, M] (objects whose anchors are ignored, ``data.difficult: ignore``).
          deltas, logits: the model's outputs.
        Returns:
          ``mgdet.losses.detection_loss``'s dict (``total`` is this replica's share).
        """
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        assignment = self.assign_targets(targets, deltas, logits)
        return loss_ops.detection_loss(
            assignment, deltas, logits, self._anchors, gt_boxes, alpha=self.focal_alpha,
            gamma=self.focal_gamma, bl1_alpha=self.bl1_alpha, bl1_gamma=self.bl1_gamma,
            bl1_beta=self.bl1_beta, cls_loss=self.cls_loss, qfl_beta=self.qfl_beta)

    def assign_targets(self, targets, deltas, logits):
        """The :class:`mgdet.assign.Assignment` of a batch under this model's strategy and
        hyper-parameters (predictions under ``stop_gradient``; objects flagged ``ignore`` in
        ``targets`` are ignored). ``targets``, ``deltas``, ``logits`` as
        :meth:`compute_detection_loss`."""
        assignment = assign_ops.assign(
            self.strategy, self._anchors, tf.cast(targets["boxes"], tf.float32),
            targets["labels"], targets["valid"], pred_deltas=tf.stop_gradient(deltas),
            pred_logits=tf.stop_gradient(logits), sigma=self.sigma, pos_iou=self.pos_iou,
            neg_iou=self.neg_iou, atss_topk=self.atss_topk, tal_topk=self.tal_topk,
            tal_alpha=self.tal_alpha, tal_beta=self.tal_beta)
        if "ignore" in targets:
            assignment = assign_ops.ignore_objects(assignment, targets["ignore"])
        return assignment

    @property
    def metrics(self):
        return list(self._trackers)

    def _update_metrics(self, losses, dropped):
        """Update the trackers so that they read global values under ``tf.distribute``.

        Keras metric variables are summed over replicas when read: each replica adds
        ``replicas x its share`` of a loss (the shares sum to the global loss) and the global
        count (identical on every replica), each with weight 1, and its own ``dropped``
        objects to their sum.
        """
        ctx = tf.distribute.get_replica_context()
        replicas = tf.cast(ctx.num_replicas_in_sync if ctx is not None else 1, tf.float32)
        values = (losses["total"] * replicas, losses["cls"] * replicas, losses["reg"] * replicas,
                  losses["num_pos_cls"], losses["num_pos_reg"], tf.cast(dropped, tf.float32))
        for tracker, value in zip(self._trackers, values):
            tracker.update_state(value)
        return reducible_logs({t.name: t.result() for t in self._trackers})

    def _unpack(self, data):
        """``(images, targets, dropped)`` of a batch: targets in the detector's own form, less
        the objects :func:`drop_invalid_objects` drops (``dropped`` of them)."""
        if isinstance(data, (tuple, list)):
            if len(data) < 2:
                raise ValueError("training data must be (images, targets) pairs, got a "
                                 f"{len(data)}-tuple")
            targets = target_ops.standardize_targets(data[1], self.bounding_box_format,
                                                     self.image_size)
            return (data[0],) + drop_invalid_objects(targets, self.num_classes)
        raise ValueError("training data must be (images, {'boxes', 'labels'}) pairs, "
                         f"got {type(data).__name__}")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TF backend, checked on 3.15) does two things here that a Detector (built in
        # __init__, no compiled losses or metrics) does not want:
        # - with a tf.distribute strategy, it averages one input batch over the replicas only
        #   to trace an unbuilt model, and that fails on bool tensors (the targets' "valid"
        #   mask): InvalidArgumentError from AddN;
        # - without one, it leaves the optimizer unbuilt, so its variables are created inside
        #   the first train-function trace and tf.function traces train_step twice (~40% of the
        #   start-up time of fit).
        # Building the optimizer is all that is needed.
        if (getattr(self, "_compile_loss", None) is not None
                or getattr(self, "_compile_metrics", None) is not None):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images, targets, dropped = self._unpack(data)
        with tf.GradientTape() as tape:
            deltas, logits = self(images, training=True)
            losses = self.compute_detection_loss(targets, deltas, logits)
            loss = losses["total"]
            if self.losses:  # regularizers added by layers, if any
                loss = loss + tf.add_n(self.losses)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(losses, dropped)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        images, targets, dropped = self._unpack(data)
        deltas, logits = self(images, training=False)
        return self._update_metrics(self.compute_detection_loss(targets, deltas, logits),
                                    dropped)

    # --- inference ---------------------------------------------------------------------------

    def detections(self, images, score_threshold=None, nms_iou=None, max_detections=None):
        """:meth:`detect`'s detections, untraced, with the model's post-processing settings
        unless given (the exports bake theirs in). The anchors enter a traced graph as a
        constant: a captured tensor would be one more graph input for converters (tf2onnx)."""
        deltas, logits = self(images, training=False)
        return postprocess(
            deltas, logits, tf.constant(np.asarray(self._anchors, np.float32)),
            self.score_threshold if score_threshold is None else score_threshold,
            self.nms_iou if nms_iou is None else nms_iou,
            self.max_detections if max_detections is None else max_detections)

    def predict_step(self, data):
        """Final detections (:meth:`detect`), boxes in ``bounding_box_format``."""
        images = data[0] if isinstance(data, (tuple, list)) else data
        out = self.detections(images)
        out["boxes"] = target_ops.convert_boxes(out["boxes"], target_ops.OWN_FORMAT,
                                                self.bounding_box_format, self.image_size)
        return out

    def detect(self, images):
        """Detections of a batch (compiled once per input signature).

        Args:
          images: [B, S, S, 3] RGB 0..255 (uint8 or float).
        Returns:
          dict ``boxes`` float32 [B, K, 4] xyxy normalized, ``scores`` float32 [B, K],
          ``classes`` int32 [B, K] (0-based), ``num_detections`` int32 [B];
          K = ``max_detections``, rows past ``num_detections`` are zeros.
        """
        if self._detect_function is None:
            self._detect_function = tf.function(self.detections, reduce_retracing=True,
                                                autograph=False)
        return self._detect_function(images)

    # --- serialization -----------------------------------------------------------------------

    def get_config(self):
        # ``weights`` is not kept: a saved model carries its own weights. Nor is the dtype
        # policy: layers take the global one when built (set it before building or loading a
        # mixed-precision model).
        return {
            "name": self.name, "trainable": self.trainable, "num_classes": self.num_classes,
            "backbone": self.backbone_name, "image_size": self.image_size, "width": self.width,
            "strategy": self.strategy,
            "sigma": self.sigma, "pos_iou": self.pos_iou, "neg_iou": self.neg_iou,
            "atss_topk": self.atss_topk, "tal_topk": self.tal_topk, "tal_alpha": self.tal_alpha,
            "tal_beta": self.tal_beta, "cls_loss": self.cls_loss, "qfl_beta": self.qfl_beta,
            "focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma,
            "bl1_alpha": self.bl1_alpha, "bl1_gamma": self.bl1_gamma, "bl1_beta": self.bl1_beta,
            "score_threshold": self.score_threshold, "nms_iou": self.nms_iou,
            "max_detections": self.max_detections, "sync_bn": self.sync_bn,
            "clip_anchors": self.clip_anchors, "input_norm": self.input_norm,
            "bounding_box_format": self.bounding_box_format,
            "class_names": list(self.class_names) if self.class_names else None,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
