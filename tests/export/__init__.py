"""Tests of mgdet.export: SavedModel, ONNX and TFLite exports."""
