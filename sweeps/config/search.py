"""Search algorithms: one registry, one entry per `search.algorithm`.

A `SearchStrategy` says everything the rest of slsweep branches on: whether the sweep runs a
designed grid (every cell of the search space, no sampler) or asks an Optuna sampler for
`num_samples` configurations, how that sampler is built from the spec's `search` section, and
whether the sweep *selects* its best configurations among those it measured (then its best values
are optimistic and `slsweep confirm` is suggested). Adding an algorithm is one entry in
`STRATEGIES` (plus its test): the spec's `search.algorithm` choices, the driver, the summary and
the confirm hints read it from here.

Optuna is imported when a sampler is built, never at import time; the sampler class is named by
its "module:Class" path (the sweep driver's history-ordered TPE lives with the driver).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_ALGORITHM", "STRATEGIES", "SamplerSettings", "SearchStrategy", "algorithm_names",
           "selecting_algorithms", "strategy"]


@dataclass(frozen=True)
class SamplerSettings:
    """What a sampler is built from (the spec's `search` section).

    Attributes:
        seed: the sampler seed (None: Optuna's own fresh seed).
        num_samples: configurations the sweep asks for.
        max_concurrent: configurations run at once (a history-ordered sampler's lag).
    """

    seed: int | None
    num_samples: int
    max_concurrent: int


def _no_options(settings: SamplerSettings) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class SearchStrategy:
    """One search algorithm.

    Attributes:
        name: the `search.algorithm` value.
        summary: one line for docs and error messages.
        sampler: "module:Class" of the Optuna sampler; None for a designed grid (no sampler: every
            point of `SearchSpace.grid()` on every seed, Tune's grid generator).
        options: keyword arguments of the sampler class for the spec's settings.
        selects: True when the sweep picks its best among the configurations it measured (its
            best values are optimistic: `slsweep confirm` reruns them on fresh seeds); False for
            designed cells.
    """

    name: str
    summary: str
    sampler: str | None = None
    options: Callable[[SamplerSettings], dict[str, Any]] = field(default=_no_options)
    selects: bool = True

    @property
    def is_grid(self) -> bool:
        """Designed cells: the sweep runs the whole grid, there is no sampler (nor Optuna study)."""
        return self.sampler is None

    def build_sampler(self, settings: SamplerSettings) -> Any:
        """The Optuna sampler for `settings` (an `optuna.samplers.BaseSampler`).

        Raises:
            ValueError: a grid strategy has no sampler.
            ImportError / AttributeError: the "module:Class" path does not resolve.
        """
        if self.sampler is None:
            raise ValueError(f"search algorithm {self.name!r} has no sampler (it runs a designed grid)")
        module, _, attr = self.sampler.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        import optuna

        with warnings.catch_warnings():  # multivariate/group TPE options are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**self.options(settings))


def _tpe_options(s: SamplerSettings) -> dict[str, Any]:
    # proposal k from trials 0 .. k - max_concurrent only: the seed promise under concurrency
    # (sweeps.driver.ordered_history)
    return {"lag": s.max_concurrent, "seed": s.seed, "n_startup_trials": min(10, max(2, s.num_samples // 3)),
            "multivariate": True, "group": True}


STRATEGIES: Mapping[str, SearchStrategy] = {s.name: s for s in (
    SearchStrategy("tpe", "Optuna's TPE (multivariate, grouped), history in trial order",
                   sampler="sweeps.driver.ordered_history:OrderedTPESampler", options=_tpe_options),
    SearchStrategy("random", "Optuna's random sampler", sampler="optuna.samplers:RandomSampler",
                   options=lambda s: {"seed": s.seed}),
    SearchStrategy("grid", "every grid point of the search space (designed cells, no sampler)",
                   selects=False),
)}
DEFAULT_ALGORITHM = "tpe"


def algorithm_names() -> list[str]:
    """The registered `search.algorithm` values, in registry order."""
    return list(STRATEGIES)


def selecting_algorithms() -> tuple[str, ...]:
    """The algorithms whose sweeps select their best configurations (`SearchStrategy.selects`)."""
    return tuple(n for n, s in STRATEGIES.items() if s.selects)


def strategy(name: str) -> SearchStrategy:
    """The strategy of `search.algorithm` `name`.

    Raises:
        KeyError: not a registered algorithm (specs are validated before: `SearchConfig`).
    """
    return STRATEGIES[name]
