"""Tests of mgdet.evaluation: COCO and VOC07 metrics, error analysis."""
