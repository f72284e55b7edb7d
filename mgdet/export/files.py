"""File exports: ONNX (tf2onnx, the SavedModel's numeric outputs with NMS) and TFLite (the
network and box decoding, float32 / float16 / int8)."""
import os
import tempfile

import numpy as np
import tensorflow as tf

from mgdet.config import QUANTIZE
from mgdet.data import get_source, pipeline
from mgdet.data.augment import resize
from mgdet.export.saved_model import build, detect_fn, raw_variable
from mgdet.ops import boxes as box_ops

ONNX_EXTRA = 'pip install "mgdet[onnx]"'  # tf2onnx and onnxruntime


def _numeric_serving_fn(model, score_threshold, nms_iou, max_detections):
    """``serving_default`` without the string output (converters do not take string ops)."""
    size = int(model.image_size)
    detect = detect_fn(model, score_threshold, nms_iou, max_detections)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        det = detect(resize(images, size))
        return {"detection_boxes": box_ops.xyxy_to_yxyx(det["boxes"]),
                "detection_scores": det["scores"],
                "detection_classes": det["classes"],
                "num_detections": det["num_detections"]}
    return serve


def export_onnx(model, path, score_threshold=0.005, nms_iou=0.5, max_detections=300, opset=17):
    """ONNX export through tf2onnx (``pip install "mgdet[onnx]"``).

    Input ``images`` uint8 ``[batch, height, width, 3]`` (resized inside); outputs
    ``detection_boxes`` / ``detection_scores`` / ``detection_classes`` (int32, 0-based) /
    ``num_detections`` as the SavedModel's (no ``detection_class_names``: ONNX has no string
    ops for it). NMS is ONNX's NonMaxSuppression. Returns ``path``.
    """
    try:
        import tf2onnx  # an optional extra, imported when used
    except ImportError as err:
        raise ImportError(f"ONNX export needs tf2onnx: {ONNX_EXTRA}") from err
    build(model)
    fn = _numeric_serving_fn(model, float(score_threshold), float(nms_iou), int(max_detections))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset,
                                  output_path=path)
    return path


DECODE_SCOPE = "mgdet_decode"  # name scope of the float box decoding and sigmoid in TFLite


def export_tflite(model, path, quantize="none", representative_images=None):
    """TFLite export of the network and box decoding (no NMS).

    Input ``images``: float32 ``[1, S, S, 3]`` RGB 0..255, already resized to the model's input.
    Outputs: ``boxes`` float32 ``[1, N, 4]`` (ymin, xmin, ymax, xmax) normalized and clipped, one
    per anchor; ``scores`` float32 ``[1, N, C]`` sigmoid scores. The class-wise NMS stays with the
    application: ``tf.image.combined_non_max_suppression`` is not a TFLite builtin (it would need
    the Flex delegate, which the stock interpreter lacks).

    Args:
      model: an mgdet Detector, built or not.
      path: the ``.tflite`` file to write.
      quantize: ``"none"`` (float32), ``"float16"`` (float16 weights, float32 compute) or
        ``"int8"``: full-integer post-training quantization of the network (int8 weights and
        activations, per-channel conv weights), calibrated on ``representative_images``. The
        box decoding and the sigmoid (name scope ``mgdet_decode``) stay float32: the network's
        int8 deltas and logits are dequantized before them, so boxes and scores keep float
        resolution (int8 scores would be multiples of 1/256).
      representative_images: for int8, an iterable of float32 images ``[S, S, 3]`` (or
        ``[1, S, S, 3]``) in 0..255, preprocessed as training feeds the model (a few dozen;
        :func:`representative_images` draws them from a config's training split).
    Returns:
      ``path``.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"export_tflite: quantize must be one of {QUANTIZE}, got "
                         f"{quantize!r}")
    images_in = list(representative_images or ()) if quantize == "int8" else None
    if images_in == []:
        raise ValueError("export_tflite: quantize='int8' needs representative_images (float32 "
                         "[S, S, 3] images in 0..255, a few dozen)")
    size = build(model)
    anchors = np.asarray(model.anchors, np.float32)
    if images_in:
        images_in = [np.asarray(x, np.float32).reshape(1, size, size, 3) for x in images_in]

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    def raw(images):
        deltas, logits = model(images, training=False)
        with tf.name_scope(DECODE_SCOPE):
            boxes = tf.clip_by_value(box_ops.decode(deltas, tf.constant(anchors)), 0.0, 1.0)
            return {"boxes": box_ops.xyxy_to_yxyx(boxes), "scores": tf.sigmoid(logits)}

    # Through a SavedModel of the raw variables: the converter then freezes them. From the
    # concrete function directly, Keras 3's variables stay READ_VARIABLE ops that the
    # interpreter reads uninitialized (NaN outputs).
    module = tf.Module()
    module.model_variables = [raw_variable(v) for v in model.variables]
    module.raw = raw
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp,
                            signatures={"serving_default": raw.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            data = _int8_convert(converter, images_in)
        else:
            data = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _int8_convert(converter, images):
    """Full-integer quantization except the ops under :data:`DECODE_SCOPE` (and the outputs):
    the selective quantization of ``tf.lite.experimental.QuantizationDebugger`` (calibrate once,
    then quantize with the decode ops' output tensors denylisted, so they run in float32)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"images": x} for x in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([x] for x in images))
    names = [d["name"] for d in
             tf.lite.Interpreter(model_content=debugger.calibrated_model).get_tensor_details()]
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=[n for n in names if n.startswith(DECODE_SCOPE + "/")
                          or n.startswith("StatefulPartitionedCall")],
        fully_quantize=False)
    return debugger.get_nondebug_quantized_model()


def representative_images(config, num_images=32):
    """The first ``num_images`` images of ``config``'s TRAINING split, preprocessed as training
    feeds them to the model without augmentation (resized to ``S x S``, float32 0..255):
    a list of ``[S, S, 3]`` arrays, the calibration set of the int8 TFLite export."""
    d, m = config.data, config.model
    source = get_source(d, image_size=m.image_size)
    ds = pipeline.make_dataset(source.dataset("train"), m.image_size, 1, d.max_objects,
                               training=True, seed=d.seed, shuffle_buffer=0, augment="none",
                               name="calibration")
    return [images[0].numpy() for images, _ in ds.take(int(num_images))]
