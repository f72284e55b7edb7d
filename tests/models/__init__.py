"""Tests of mgdet.models: detectors, heads, backbones, transfer and keras-hub-style inputs."""
