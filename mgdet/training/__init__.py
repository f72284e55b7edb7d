"""Training: the loop around ``model.fit`` (:mod:`~mgdet.training.loop`) and its callbacks,
optimizer and schedule, NaN / SIGTERM guard, distribution, run folders, checkpoints, CPU checks,
fine-tuning from a trained run and loading a trained run back (:mod:`~mgdet.training.trained`)."""
