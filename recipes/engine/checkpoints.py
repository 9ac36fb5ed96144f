"""A run's files on disk: an atomic checkpoint and state file every epoch (the best epoch kept
beside the last), the checks a resume makes, and the rule for reusing a run folder."""

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from zoo.errors import ZooError

STATE_FILE = "state.json"
BEST_FILE = "best.keras"


def atomic_write(path, write, kept=""):
    """Calls `write(temporary_path)` then renames it to `path`; on failure nothing at `path` changes.

    A failed write (disk full, read-only or missing folder) raises a one-line ZooError naming the
    file, `kept` (what is intact: the caller knows, e.g. `resume_note`) and the fix.
    """
    path = Path(path)
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ZooError(
            f"could not write {path} ({error.strerror or error}); {kept + '; ' if kept else ''}"
            "free disk space or choose another --out"
        ) from None


def resume_note(run_dir):
    """What a run in `run_dir` can resume from, read from its state files: a failed write says it truly."""
    epochs = []
    for path in _states(run_dir):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("epoch", 0) > 0 and (path.parent / str(state.get("checkpoint"))).is_file():
            epochs.append(state["epoch"])
    if not epochs:
        return "no epoch was checkpointed yet, so nothing can be resumed: run again"
    return f"the checkpoint of epoch {max(epochs)} is intact, continue with --resume"


class CheckpointCallback(keras.callbacks.Callback):
    """Every epoch: checkpoint (model + optimizer) and state atomically, early stopping, NaN guard."""

    def __init__(self, directory, run_name, settings, state):
        super().__init__()
        self.directory, self.run_name, self.settings = Path(directory), run_name, settings
        self.state = state
        self.non_finite = None

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.non_finite = f"loss became NaN or infinite at epoch {self.state['epoch'] + 1}, step {batch + 1}"
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self.started, self.earlier_seconds = time.perf_counter(), self.state.get("train_seconds", 0.0)

    def on_epoch_end(self, epoch, logs=None):
        # The logged loss alone is not enough: depending on the CPU's NaN handling in min/max and
        # clipping, a loss can stay finite while the weights have already turned NaN. No
        # checkpoint is written unless every weight is finite.
        if not self.non_finite and not all(np.isfinite(w).all() for w in self.model.get_weights()):
            self.non_finite = f"weights became NaN or infinite during epoch {epoch + 1}"
            self.model.stop_training = True
        if self.non_finite:
            return  # keep the last good checkpoint
        kept = resume_note(self.directory.parent)  # before this epoch's files: what a failed write leaves
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        state = self.state
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["train_seconds"] = self.earlier_seconds + time.perf_counter() - self.started  # summed over resumes
        name = f"epoch-{epoch + 1:04d}.keras"
        atomic_write(self.directory / name, self.model.save, kept)
        monitor = "val_loss" if "val_loss" in row else "loss"
        if state["best"] is None or row[monitor] < state["best"]["value"]:
            state["best"] = {"epoch": epoch + 1, "value": row[monitor], "monitor": monitor}
            state["wait"] = 0
            # A file copy, not a second serialisation: checkpoints stay cheap on short epochs.
            atomic_write(self.directory / BEST_FILE, lambda p: shutil.copyfile(self.directory / name, p), kept)
        else:
            state["wait"] += 1
        previous, state["checkpoint"] = state.get("checkpoint"), name
        atomic_write(self.directory / STATE_FILE, lambda p: Path(p).write_text(json.dumps(state, indent=1)), kept)
        if previous and previous != name:
            (self.directory / previous).unlink(missing_ok=True)
        if self.settings.patience and state["wait"] >= self.settings.patience:
            self.model.stop_training = True
            state["stopped_early"] = True


def new_state(run_name, settings):
    return {"run": run_name, "epoch": 0, "history": [], "best": None, "wait": 0, "checkpoint": None, "train_seconds": 0.0,
            "settings": _resumable_settings(settings)}


def _resumable_settings(settings):
    """The settings a resume must keep (all but the progress output), as the state file holds them."""
    return {key: value for key, value in dataclasses.asdict(settings).items() if key != "verbose"}


def check_resumed_settings(saved, settings, checkpoints):
    """Refuses to resume with other training settings: the checkpoint's optimizer would train on with
    its own. More epochs are what a resume is for, except under a cosine schedule, which has
    already decayed to 0 at the run's last epoch. (State files from before settings were saved:
    not checked.)"""
    if saved is None:
        return
    asked = _resumable_settings(settings)
    if settings.lr_schedule != "cosine":
        saved, asked = {**saved, "epochs": None}, {**asked, "epochs": None}
    changed = config_changes({"train": saved}, {"train": asked})
    if changed:
        why = " (a cosine schedule ends at the run's last epoch: more epochs need a new run)" if "train.epochs" in changed else ""
        raise ZooError(f"{checkpoints} holds a run trained with other settings ({changed}){why}; resume with the "
                       "settings it was trained with or choose another --out")


def _states(run_dir):
    """The checkpoint states of every model trained in run_dir (a recipe trains one per tag)."""
    return list(Path(run_dir).glob(f"**/checkpoints/{STATE_FILE}"))


def train_seconds(run_dir):
    """Training time of every model in run_dir, summed over all resumes of the run."""
    return sum(json.loads(path.read_text()).get("train_seconds", 0.0) for path in _states(run_dir))


def claim_run_dir(run_dir, resume, marker):
    """Checks `run_dir` before a run writes to it and returns whether the run resumes.

    A folder holding `marker` (the first thing a run writes, e.g. config.json) but no completed
    epoch, no model and no metrics is a run that failed before it trained: nothing in it is worth
    keeping, so it is cleared and the run starts afresh, with or without --resume. Any other
    non-empty folder is refused unless the run resumes it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return resume
    if (run_dir / marker).exists() and not any((run_dir / name).exists() for name in ("model.keras", "metrics.json")):
        try:
            completed = any(json.loads(path.read_text()).get("epoch", 0) > 0 for path in _states(run_dir))
        except (json.JSONDecodeError, UnicodeDecodeError):
            completed = True  # unreadable: not ours to delete
        if not completed:
            shutil.rmtree(run_dir)
            print(f"aezoo: {run_dir} holds a run that never completed an epoch; starting afresh", file=sys.stderr)
            return False
    if not resume:
        raise ZooError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    return True


def config_changes(saved, asked):
    """'key: saved -> asked' for every setting (dotted key) that differs between two resolved configs; '' if none."""

    def flat(config, prefix=""):
        if not isinstance(config, dict):
            return {prefix: config}
        return {key: value for name, item in config.items() for key, value in flat(item, f"{prefix}{name}.").items()}

    # through JSON, as the saved config went: tuples compare as lists
    saved, asked = flat(json.loads(json.dumps(saved))), flat(json.loads(json.dumps(asked)))
    return ", ".join(
        f"{key[:-1]}: {saved.get(key, 'unset')} -> {asked.get(key, 'unset')}"
        for key in sorted(saved.keys() | asked.keys())
        if saved.get(key, ...) != asked.get(key, ...)
    )


def read_state(run_dir, run_name):
    """The checkpoint state of `run_dir`, checked to belong to `run_name`."""
    path = Path(run_dir, "checkpoints", STATE_FILE)
    if not path.exists():
        raise ZooError(f"nothing to resume: no checkpoint in {path.parent}; run again without --resume")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ZooError(f"{path} is corrupt; start a new run (another --out) or remove the folder") from None
    if state.get("run") != run_name:
        raise ZooError(
            f"{run_dir} holds a {state.get('run')!r} run, not {run_name!r}; resume it with its own command or choose another --out"
        )
    return state


def restore_best(model, checkpoints, state, settings):
    """`model` with the weights of the run's best epoch (with `settings.use_ema`, their average)."""
    if state["best"] is None:
        return model
    if settings.use_ema:  # the best checkpoint's averaged weights, which its optimizer state holds
        best = keras.models.load_model(checkpoints / BEST_FILE)
        best.optimizer.finalize_variable_values(best.trainable_variables)
        model.set_weights(best.get_weights())
    elif state["best"]["epoch"] != state["epoch"]:
        model.load_weights(checkpoints / BEST_FILE)
    return model


def write_history(path, rows):
    """Per-epoch metrics as CSV (columns: epoch, then every metric seen)."""
    columns = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})]

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
