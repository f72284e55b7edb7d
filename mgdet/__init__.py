"""mgdet: Mutual Guidance label assignment (Zhang et al., ACCV 2020) for FSSD, RetinaNet and
RFBNet detectors in TensorFlow 2 / Keras 3.

Boxes are ``[xmin, ymin, xmax, ymax]`` normalized to [0, 1] everywhere inside mgdet.
"""
__version__ = "0.1.0"


def build_model(config, num_classes=None):
    """A detector from a :class:`mgdet.config.Config`.

    Args:
      config: the experiment config (``model``, ``assign``, ``loss``, ``eval`` sections).
      num_classes: overrides ``config.model.num_classes`` (e.g. from the dataset).
    Returns:
      an un-compiled :class:`mgdet.models.Detector`.
    """
    from mgdet.models import MODELS

    m, a, lo, e = config.model, config.assign, config.loss, config.eval
    num_classes = num_classes or m.num_classes
    if not num_classes:
        raise ValueError("num_classes is unknown: set model.num_classes or pass num_classes")
    return MODELS[m.arch](
        num_classes=num_classes, backbone=m.backbone, image_size=m.image_size, width=m.width,
        weights=m.weights, strategy=a.strategy, sigma=a.sigma, pos_iou=a.pos_iou,
        neg_iou=a.neg_iou, focal_alpha=lo.focal_alpha, focal_gamma=lo.focal_gamma,
        bl1_alpha=lo.bl1_alpha, bl1_gamma=lo.bl1_gamma, bl1_beta=lo.bl1_beta,
        score_threshold=e.score_threshold, nms_iou=e.nms_iou, max_detections=e.max_detections,
        clip_anchors=m.clip_anchors)
