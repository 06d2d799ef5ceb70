"""A CSV logger whose metrics.csv survives a resume (Lightning's deletes an existing file)."""

from __future__ import annotations

import csv
import os
import tempfile

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class RunCSVLogger(CSVLogger):
    """Writes metrics.csv and hparams.yaml into the run folder itself, appending on resume."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(save_dir=run_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at `step` or later, which a run resumed from a checkpoint of
        that step logs again (after a kill, the rows flushed after the last checkpoint would
        otherwise appear twice). The file is replaced atomically. Returns the rows removed."""
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return 0
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
        if not rows or "step" not in rows[0]:
            return 0
        column = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if not r[column] or int(float(r[column])) < step]
        if len(kept) == len(rows):
            return 0
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".metrics-")
        with os.fdopen(handle, "w", newline="") as file:
            csv.writer(file).writerows(kept)
        os.replace(temporary, path)
        return len(rows) - len(kept)
