"""`slsweep ui`: the MLflow UI on a run folder's store, as a process group this command owns.

`mlflow ui` starts uvicorn, which starts worker processes; stopping only the first process (what a
plain `subprocess.call` does on SIGTERM) leaves the workers serving. Here the server runs in its own
session (process group) and every way this command ends (Ctrl-C, SIGTERM, the server exiting)
stops the whole group: SIGTERM, then SIGKILL after `STOP_GRACE_S`. The URL is printed only once the
server answers `/health`, so it can be clicked as soon as it appears.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sweeps.errors import SlsweepError
from sweeps.store import paths, schema

READY_TIMEOUT_S = 180.0  # MLflow's first start on a busy 2-core machine takes tens of seconds
STOP_GRACE_S = 10.0

__all__ = ["address_problem", "latest_sweep_url", "serve_ui", "ui_command", "wait_until_serving"]


def ui_command(folder: Path, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow ui` command line for the run folder's store (artifacts stay in the folder)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", paths.default_tracking_uri(folder),
            "--artifacts-destination", paths.artifacts_root(folder),
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--uvicorn-opts", "--log-level warning --no-access-log"]  # no line per HTTP request


def latest_sweep_url(url: str) -> str | None:
    """The runs table of the experiment holding the newest sweep, opened in MLflow's "Model
    training" view (`workflowType=machine_learning`; MLflow 3.17's UI otherwise opens every
    experiment on its GenAI pages, whatever the experiment's `mlflow.experimentKind`), or None."""
    import json

    def call(path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    try:
        ids = [e["experiment_id"] for e in call("experiments/search", {"max_results": 1000})
               .get("experiments", [])]
        runs = call("runs/search", {"experiment_ids": ids, "max_results": 1,
                                    "filter": schema.run_filter(schema.KIND_SWEEP),
                                    "order_by": ["attributes.start_time DESC"]}).get("runs", []) if ids else []
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not runs:
        return None
    return f"{url}/#/experiments/{runs[0]['info']['experiment_id']}/runs?workflowType=machine_learning"


def wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Poll `url`/health until it answers 200 (True), the process exits or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not ended after the grace."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; workers in the group may not be.
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def _reachable(host: str) -> str:
    """The address to print for a bind address: loopback for a wildcard (all interfaces)."""
    import ipaddress

    try:
        return "127.0.0.1" if not host or ipaddress.ip_address(host).is_unspecified else host
    except ValueError:  # a host name
        return host


def address_problem(host: str, port: int) -> str | None:
    """Why the UI cannot listen on `host`:`port` (a port outside 1..65535, a host this machine
    cannot bind, a port already taken), as one line naming the flag; else None."""
    import socket

    if not 1 <= port <= 65535:
        return f"--port: {port}: a port is 1 .. 65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"--host: {host!r}: not an address of this machine ({exc})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except PermissionError:
            return f"--port: {port}: binding it needs privileges (ports below 1024); choose another --port"
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"--port: {port} is in use on {host}; choose another --port"
            return f"--host: {host}: cannot listen there ({exc.strerror or exc})"
    return None


def serve_ui(folder: Path | None, host: str = "127.0.0.1", port: int = 5000, *,
             echo: Callable[[str], None] = print, ready_timeout_s: float = READY_TIMEOUT_S) -> int:
    """Serve the MLflow UI for `folder`'s store (None: the default run folder) until
    Ctrl-C/SIGTERM; returns the exit status.

    Returns 0 after a Ctrl-C or SIGTERM (the server group is stopped), else the server's own
    status when it exits by itself.

    Raises:
        SlsweepError: no MLflow store in `folder`, or the server exits before it answers.
    """
    problem = address_problem(host, port)  # before anything starts: one line naming the flag
    if problem:
        raise SlsweepError(problem)
    source = paths.runs_dir_source(folder)
    folder = paths.run_folder(folder)
    if not (folder / paths.MLFLOW_DB).exists():
        raise SlsweepError(f"{folder}: {source}: no MLflow store here (run `slsweep run` first)")
    paths.relocate_store(folder)  # a moved or copied folder shows its own artifacts
    url = f"http://{_reachable(host)}:{port}"
    cmd = ui_command(folder, host, port)
    proc = subprocess.Popen(cmd, start_new_session=True,
                            # Neither the server nor the uvicorn it starts (whose --app-dir "" puts the
                            # current folder on sys.path) imports modules from the folder `slsweep ui` was
                            # started in: they run in "/" (every path they are given is absolute).
                            cwd="/", env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONSAFEPATH": "1"})
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        echo(f"starting the MLflow UI for {folder} ...")
        if not wait_until_serving(url, proc, ready_timeout_s):
            if proc.poll() is not None:
                raise SlsweepError(f"--port: the MLflow UI exited with status {proc.returncode} before it "
                                   f"answered on {url} (port {port} in use? try --port)")
            raise SlsweepError(f"--port: the MLflow UI did not answer on {url} within {ready_timeout_s:.0f} s")
        echo(f"MLflow UI on {url} (Ctrl-C to stop)")
        sweep_url = latest_sweep_url(url)
        if sweep_url:
            echo(f"latest sweep's runs: {sweep_url}")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
