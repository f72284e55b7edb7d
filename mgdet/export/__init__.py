"""Export: the TF Serving SavedModel (:mod:`~mgdet.export.saved_model`) in version folders
(:mod:`~mgdet.export.versions`), ONNX and TFLite files (:mod:`~mgdet.export.files`) and the
``mgdet export`` command (:mod:`~mgdet.export.command`)."""
