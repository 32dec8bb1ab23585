"""slsweep service: sweep specs, search spaces, trials, Ray Tune runner, MLflow tracking, reports."""

__version__ = "0.1.0"
