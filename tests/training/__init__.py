"""Tests of mgdet.training: the training loop, checkpoints, run folders, optimizer, distribution."""
