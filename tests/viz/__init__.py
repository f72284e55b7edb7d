"""Tests of mgdet.viz: drawing and plots."""
