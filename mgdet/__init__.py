"""mgdet: Mutual Guidance label assignment (Zhang et al., ACCV 2020) for FSSD, RetinaNet and
RFBNet detectors in TensorFlow 2 / Keras 3.

Boxes are ``[xmin, ymin, xmax, ymax]`` normalized to [0, 1] everywhere inside mgdet.

The public API (README, "Python API"; the functions of :mod:`mgdet.api`). ``import mgdet``
does not import TensorFlow; each function imports it on first use:

    cfg = mgdet.load_config("default", ["train.epochs=1"])  # a shipped name or a YAML path
    data = mgdet.build_datasets(cfg)     # .train, .eval (tf.data), .class_names, .ground_truth
    model = mgdet.build_model(cfg, num_classes=len(data.class_names))
    metrics = mgdet.train(cfg)           # the full recipe, as `mgdet train`
    metrics = mgdet.evaluate(model, cfg)
    mgdet.export_saved_model(model, "saved_models/x/1", data.class_names)
    detections = mgdet.predict(model, images)
    model = mgdet.load_pretrained("pretrained/rfbnet_mg_voc")  # converted: docs/zoo.md
"""
from mgdet.api import (build_datasets, build_model, evaluate, export_saved_model, load_config,
                       load_pretrained, predict, train)

__version__ = "0.1.0"
__all__ = ["load_config", "build_model", "build_datasets", "train", "evaluate",
           "export_saved_model", "predict", "load_pretrained"]
