"""The run layer: checkpoints, run folders and restoring a trained run.

It sits beside the stages, not above them: training writes runs, and the audit, predict, serve and
export read them, without any of them importing the training package.
"""

from lungaudit.runs.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from lungaudit.runs.restore import TrainedModels, load_run, restore
from lungaudit.runs.rundir import MetricsLog, increment_run_dir

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "MetricsLog",
    "TrainedModels",
    "increment_run_dir",
    "load_checkpoint",
    "load_run",
    "restore",
    "save_checkpoint",
]
