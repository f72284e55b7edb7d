"""Pictures: detections drawn on images (:mod:`~mgdet.viz.drawing`, PIL only) and the label
assignment of a detector drawn per object (:mod:`~mgdet.viz.show_assign`, ``mgdet show-assign``)."""
