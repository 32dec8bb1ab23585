"""From YAML to validated objects: YAML reading (`yamlio`), `key=value` overrides (`overrides`), one
trial's configuration (`trial_config`), the sweep spec (`spec`) and the search space (`space`).
Imports `sweeps.store`, `sweeps.tasks` and `sweeps.models` below it, never the trial or the driver."""
