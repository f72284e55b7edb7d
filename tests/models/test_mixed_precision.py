"""Under ``mixed_bfloat16`` the layers compute in bf16, but the head's outputs are cast to
float32 and the label assignment, the losses, their gradients' variables and the
post-processing stay float32 (docs/design.md, "Precision").

A tiny detector is built under the policy; the global policy is restored after each test.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.models import MODELS
from mgdet.ops.postprocess import postprocess
from tests.batches import painted_batch

NUM_CLASSES = 3


@pytest.fixture
def bf16_policy():
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _float_dtypes(tree):
    """The dtypes of the floating tensors of a nested structure."""
    return {t.dtype for t in tf.nest.flatten(tree) if t is not None and t.dtype.is_floating}


@pytest.mark.slow
@pytest.mark.parametrize("strategy, cls_loss", [("mg", "focal"), ("tal", "quality_focal")])
def test_assignment_losses_and_postprocessing_stay_float32_under_bf16(bf16_policy, strategy,
                                                                      cls_loss):
    keras.utils.set_random_seed(0)
    model = MODELS["fssd"](num_classes=NUM_CLASSES, backbone="resnet18", image_size=64,
                           width=0.125, strategy=strategy, cls_loss=cls_loss)
    images, raw = painted_batch(64, 2, 4, NUM_CLASSES)
    images, targets, _ = model._unpack((images, raw))
    # the policy took: the layers, the head's convolutions included, compute in bf16 and keep
    # float32 variables
    conv = model.head.box_convs[0]
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert conv(tf.zeros([1, 8, 8, conv.kernel.shape[2]])).dtype == tf.bfloat16
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    with tf.GradientTape() as tape:
        deltas, logits = model(images, training=True)
        assignment = model.assign_targets(targets, deltas, logits)
        losses = model.compute_detection_loss(targets, deltas, logits)
    # the head's outputs are cast to float32 before the assignment and the loss
    assert deltas.dtype == tf.float32 and logits.dtype == tf.float32
    assert assignment.cls_labels.dtype == tf.int32 and assignment.reg_positive.dtype == tf.bool
    assert _float_dtypes(assignment) == ({tf.float32} if strategy == "tal" else set())
    assert _float_dtypes(losses) == {tf.float32}
    assert np.isfinite(losses["total"].numpy()) and losses["num_pos_cls"].numpy() > 0
    gradients = tape.gradient(losses["total"], model.trainable_variables)
    assert {g.dtype for g in gradients if g is not None} == {tf.float32}
    detections = model.detections(images)
    assert _float_dtypes(detections) == {tf.float32}
    assert detections["classes"].dtype == tf.int32
    assert detections["num_detections"].dtype == tf.int32

    # The same float32 head outputs give bit for bit the same assignment, losses and
    # detections under the float32 policy: nothing after the head follows the policy.
    keras.mixed_precision.set_global_policy("float32")
    again = model.assign_targets(targets, deltas, logits)
    for a, b in zip(assignment, again):
        if a is not None:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    again = model.compute_detection_loss(targets, deltas, logits)
    for key in losses:
        assert losses[key].numpy() == again[key].numpy(), key
    inference = model(images, training=False)
    again = postprocess(*inference, model.anchors, model.score_threshold, model.nms_iou,
                        model.max_detections)
    for key in detections:
        np.testing.assert_array_equal(detections[key].numpy(), again[key].numpy())
