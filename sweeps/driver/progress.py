"""What a person watching a sweep or a trial sees: progress bars, one line per trial event, and
(with `-q`) nothing else.

- `SweepProgress`: a Ray Tune callback on the driver: an overall bar (trials done / total; its ETA
  counts optimizer steps, so trials stopped early shorten it) and one line per trial start, result
  and end.
- `TrialProgress`: the bar of `slsweep trial` (step, loss, ETA from step 1).
- `quiet_output()`: `-q`: Tune's own console output and the INFO/WARNING chatter of Ray, Tune,
  Optuna, MLflow and transformers are switched off through their settings (Tune's legacy output at
  verbosity 0, logger levels), not filtered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, Callable

from tqdm.auto import tqdm

from ray.tune import Callback

from sweeps.trial import REPLAYED

__all__ = ["SweepProgress", "TrialProgress", "quiet_output"]

_QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "optuna", "mlflow", "alembic",
                  "transformers", "filelock", "urllib3")


@contextlib.contextmanager
def quiet_output(quiet: bool) -> Iterator[None]:
    """Inside: with `quiet`, only errors from the libraries a sweep drives reach the console.

    Tune's new console output prints its configuration box even at verbosity 0; its legacy output
    (`RAY_AIR_NEW_OUTPUT=0`) at verbosity 0 prints nothing, so quiet sweeps use that.
    """
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    saved_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    bars = hf_logging.is_progress_bar_enabled()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # failures: the progress lines, the summary
    hf_logging.disable_progress_bar()  # "Writing model shards" when the tiny model is built
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class SweepProgress(Callback):
    """Driver-side progress of a sweep: one overall bar plus a line per trial event.

    Args:
        total_trials: trials the sweep runs.
        max_steps: a trial's step budget (the bar's unit of work).
        metric: the metric shown on each result line.
        name: maps a Tune trial to the label shown (the MLflow run name).
        file: where to draw (default stderr).
    """

    def __init__(self, total_trials: int, max_steps: int, metric: str,
                 name: Callable[[Any], str] = str, file: Any = None) -> None:
        self.total_trials, self.max_steps, self.metric = total_trials, max(1, max_steps), metric
        self.name, self.file = name, file
        self.bar: Any = None
        self.steps: dict[str, int] = {}   # trial id -> steps counted on the bar
        self.done: set[str] = set()

    def __reduce__(self):  # noqa: ANN204 - never saved with the experiment state (a display)
        return (Callback, ())

    def setup(self, **info: Any) -> None:
        self.bar = tqdm(total=self.total_trials * self.max_steps, file=self.file or sys.stderr,
                        desc=self._desc(), unit="step", dynamic_ncols=True, mininterval=0.5,
                        bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")

    def _desc(self) -> str:
        return f"sweep: {len(self.done)}/{self.total_trials} trials done"

    def _advance(self, trial: Any, step: int) -> None:
        if self.bar is None:
            self.setup()
        step = min(step, self.max_steps)
        delta = step - self.steps.get(trial.trial_id, 0)
        if delta > 0:
            self.steps[trial.trial_id] = step
            self.bar.update(delta)

    def _say(self, text: str) -> None:
        if self.bar is None:
            self.setup()
        self.bar.write(text, file=self.file or sys.stderr)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{self.name(trial)}: started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        step = int(result.get("step") or 0)
        self._advance(trial, step)
        if result.get(REPLAYED):  # a restarted multi-worker trial's checkpoint evaluation, shown before
            self._say(f"{self.name(trial)}: resumed from its checkpoint at step {step}")
            return
        shown = "  ".join(f"{k}={_short(result[k])}" for k in dict.fromkeys((self.metric, "train_loss"))
                           if k in result)  # (once when the sweep's metric is train_loss)
        self._say(f"{self.name(trial)}: step {step}/{self.max_steps}  {shown}")

    def _end(self, trial: Any, how: str) -> None:
        self.done.add(trial.trial_id)
        self._advance(trial, self.max_steps)  # stopped early or failed: no work left
        self.bar.set_description_str(self._desc())
        self._say(f"{self.name(trial)}: {how}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        step = int((trial.last_result or {}).get("step") or 0)
        self._end(trial, "finished" if step >= self.max_steps else f"stopped early at step {step}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "failed (error in the summary and the MLflow tag slsweep.error)")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class TrialProgress:
    """The step bar of a single trial: steps done / total, the latest loss, the ETA.

    Use `step(step, loss)` as `run_trial`'s `on_step` and `write` as its `log`; the bar is drawn
    on `file` (default stderr), the log lines go to stdout.
    """

    def __init__(self, total_steps: int, file: Any = None) -> None:
        self.total, self.file, self.bar = total_steps, file or sys.stderr, None

    def step(self, step: int, loss: float) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=step - 1, file=self.file, desc="train",
                            unit="step", dynamic_ncols=True, mininterval=0.2)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)

    def write(self, text: str) -> None:
        """A progress line on stdout (the bar, on stderr, is redrawn below it)."""
        tqdm.write(text, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
