"""The run folder and the MLflow store: names as data (`names`), where everything lives and how a
tracking URI is resolved (`paths`), the schema every writer and reader shares (`schema`), and the
MLflow UI (`ui`). Imports only `sweeps.errors`."""
