"""Tests of mgdet.assign: label assignment."""
