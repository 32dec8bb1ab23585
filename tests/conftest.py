"""Suite-wide settings: no hub access, a private model cache and run folder per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # never inherit a user's server
os.environ.pop("MLFLOW_TRACKING_URI")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU the Triton kernels' tests (test_triton_kernels.py) run in Triton's interpreter, which
# is chosen when triton is first imported, and torch itself may import triton: set it before anything.
if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tempfile  # noqa: E402

import pytest  # noqa: E402

# Local Ray sessions of this test run keep their files in a private, short folder (socket paths
# must stay under 107 characters), removed when the run ends (`pytest_sessionfinish`).
_RAY_TMP: str | None = None
if "SLSWEEP_RAY_TMP" not in os.environ:
    _RAY_TMP = os.environ["SLSWEEP_RAY_TMP"] = tempfile.mkdtemp(prefix="slr-", dir="/tmp")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this run's Ray folder (every Ray session of the tests has stopped by now)."""
    if _RAY_TMP is not None:
        import shutil

        shutil.rmtree(_RAY_TMP, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tiny models are built once per session into a private cache, not the user's."""
    if "SLSWEEP_CACHE_DIR" not in os.environ:
        os.environ["SLSWEEP_CACHE_DIR"] = str(tmp_path_factory.mktemp("slsweep-cache"))
