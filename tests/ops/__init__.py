"""Tests of mgdet.ops: box coding, anchors, post-processing."""
