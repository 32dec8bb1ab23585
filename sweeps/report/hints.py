"""What a report says to do next: the command that confirms a search sweep's best configurations.

Lives on the report floor so the HTML page (`sweeps.report.html`) and `slsweep confirm`
(`sweeps.driver.confirm`) share one text without the report importing the driver.
"""

from __future__ import annotations

import shlex

from sweeps.config.search import selecting_algorithms
from sweeps.report.runs import SweepRuns
from sweeps.store.schema import ALGORITHM_PARAM, SEEDS_PARAM, store_flags

SEARCH_ALGORITHMS = selecting_algorithms()  # searches whose best is selected (grid cells are designed)


def confirm_hint(runs: SweepRuns) -> str | None:
    """For a TPE/random sweep: why its best values are optimistic and the command that confirms
    them (with the flags that find its store from any folder, `sweeps.store.schema.store_flags`);
    None for grid sweeps (their cells are designed, not selected).

    Args:
        runs: the loaded sweep (its newest parent run's params name the search).

    Returns:
        One paragraph of text, or None.
    """
    algo = runs.sweep.params.get(ALGORITHM_PARAM)
    if algo not in SEARCH_ALGORITHMS:
        return None
    seeds = runs.sweep.params.get(SEEDS_PARAM, "1")
    return (f"This {algo} sweep chose its best configurations on the same seed(s) it measured them "
            f"on ({seeds} per configuration), so their values are optimistic and untested. Confirm "
            f"them on fresh seeds at full budget: slsweep confirm {shlex.quote(runs.sweep.sweep_id)} --top 3 "
            f"--seeds 5 --baseline loss=hard{store_flags(runs.tracking_uri)}")
