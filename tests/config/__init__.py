"""Tests of mgdet.config: config files and validation."""
