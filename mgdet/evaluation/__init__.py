"""Evaluation: COCO metrics through pycocotools (:mod:`~mgdet.evaluation.coco`), the VOC07
11-point metric (:mod:`~mgdet.evaluation.voc_metric`) and error analysis: PR curves and the
confusion matrix (:mod:`~mgdet.evaluation.analysis`)."""
