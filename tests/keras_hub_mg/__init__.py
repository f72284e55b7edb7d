"""Tests of mgdet.keras_hub: Mutual Guidance inside keras-hub's RetinaNet."""
