"""Tests of mgdet.convert: weight conversion."""
