"""The sweep driver: preflight checks (`preflight`), the Ray environment (`ray_env`), the Tune run
(`tuner`), the MLflow writer (`tracking`), signals (`signals`), progress (`progress`), ordered
sampler history (`ordered_history`), the service that ties them (`service`) and `confirm`."""
