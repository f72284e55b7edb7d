"""Tests of mgdet.data: sources, pipeline, augmentation, synthetic data."""
