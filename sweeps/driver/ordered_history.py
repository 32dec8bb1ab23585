"""The seed promise under concurrency: TPE sees its history in trial order.

With `max_concurrent` trials running at once, the trials that have finished when Optuna's TPE is
asked for proposal k depend on timing (which of two trials ends first), so the same sampler seed
would propose different configurations from run to run. Here proposal k (Optuna trial number k,
counted from 0) is made from the results of trials 0 .. k - lag exactly, `lag` being the sweep's
`search.max_concurrent`:

- `OrderedTPESampler` (Optuna's TPESampler) shows the sampler a study holding only the trials
  numbered <= k - lag (later trials that already finished are hidden until their turn);
- `history_ready` says whether all of them have finished; `RunFolderOptunaSearch.suggest`
  (sweeps.driver.tuner) answers "not yet" (None, Tune asks again at its next step) until they have.

With `max_concurrent: 1` nothing changes (trial k - 1 has always finished when k is proposed).
The results are still told to the study as they come (the record and optuna-dashboard stay live);
only what the sampler reads is ordered. What it costs: a slot may stay empty while an older
trial is still running. The proposals are then a function of the seed and of the trials' results;
the results themselves are the same run to run only when the trials are (FIFO scheduler, or ASHA
with `max_concurrent: 1`: ASHA's asynchronous rungs stop trials by arrival order).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from sweeps.driver.tune_internals import study_trial_count, study_up_to


class OrderedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler that proposes trial k from the trials numbered <= k - `lag` only.

    Args:
        lag: the sweep's `search.max_concurrent` (>= 1); 1 is plain TPE run one trial at a time.
        **kwargs: TPESampler's own (seed, n_startup_trials, multivariate, group, ...).
    """

    def __init__(self, *, lag: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lag = max(1, int(lag))

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        return study_up_to(study, trial.number - self.lag)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return super().infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return super().sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)


def history_ready(study: optuna.Study, lag: int, asked: Iterable[tuple[int, bool]]) -> bool:
    """Whether the next proposal (Optuna trial number = the study's trial count) may be made:
    every trial this searcher asked for that is numbered <= next - `lag` has finished.

    Args:
        study: the sweep's Optuna study.
        lag: as `OrderedTPESampler.lag`.
        asked: (Optuna trial number, finished) for each trial the searcher holds; trials the study
            has but the searcher does not (left by a driver killed between ask and save) are not
            waited for.
    """
    last = study_trial_count(study) - max(1, int(lag))
    return all(done for number, done in asked if number <= last)
