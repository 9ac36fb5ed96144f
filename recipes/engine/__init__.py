"""The training engine: training loop, precision and distribution, checkpoints, run configs, reports."""
