"""Pure tensor functions on boxes: box math and coding (:mod:`~mgdet.ops.boxes`), anchors
(:mod:`~mgdet.ops.anchors`), training-target formats (:mod:`~mgdet.ops.targets`) and
decoding + NMS (:mod:`~mgdet.ops.postprocess`)."""
