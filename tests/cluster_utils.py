"""Start and stop a real multi-node Ray cluster and a real `mlflow server` on this machine.

Both are plain subprocesses this module starts, each in a session of its own, and stops by that
session (its processes, found by session id), never by name: a bare `ray stop` would end every Ray
process on the host, other people's included. A guard in each session ends it if the starting
process dies first. Each Ray node gets its own short temp dir (unix socket paths must stay under
107 characters) and its own ports, and head, workers and drivers share one `RAY_AUTH_MODE`.

    with RayCluster(nodes=2, cpus_per_node=1) as cluster:
        apply_driver_env()                      # this process agrees with the nodes on auth
        ray.init(address=cluster.address)       # the GCS form; `cluster.client_address` is ray://
    with MlflowServer(tmp_path) as server:
        server.uri                              # http://127.0.0.1:PORT
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
AUTH_MODE = "token"  # what a local `ray.init()` switches itself to; drivers in this process agree
# The variables that must agree between head, workers and drivers of one cluster.
CLUSTER_ENV = {"RAY_AUTH_MODE": AUTH_MODE, "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(size: int, lo: int = 20000, hi: int = 40000) -> tuple[int, int]:
    """`size` consecutive free ports (for a node's worker processes)."""
    for _ in range(200):
        start = random.randrange(lo, hi - size)
        if all(_port_free(p) for p in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError("no free port range found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ray_client_available() -> bool:
    """Whether `ray[client]` (grpcio) is installed, which `ray://` addresses need."""
    from ray._private.utils import get_ray_client_dependency_error  # noqa: PLC0415

    return get_ray_client_dependency_error() is None


def node_ip() -> str:
    """The address Ray advertises for this machine (what `ray start` picks by default)."""
    import ray._private.services as services

    return services.get_node_ip_address()


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):  # noqa: ANN001, ANN201
    """Poll `predicate()` until it returns something truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# The leader of each session we start: it runs the real command as its child and reads stdin, a
# pipe the starting process holds. If that process dies without stopping the session (a CI
# timeout's SIGKILL), EOF arrives and the guard SIGKILLs every process of its session, so nothing
# outlives the tests. (Ray's own process reaper uses the same trick.) Sessions, not process groups:
# `ray start` and a Ray driver make themselves group leaders, but never leave the session.
_GUARD = """
import os, signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
def watch():
    sys.stdin.read()
    me, sid = os.getpid(), os.getsid(0)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if pid != me and os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(137)
threading.Thread(target=watch, daemon=True).start()
sys.exit(child.wait())
"""


@dataclass
class OwnedProcess:
    """A command running in a session of its own (under a guard); `stop` ends the whole session."""

    name: str
    proc: subprocess.Popen  # the guard: session leader, session id = proc.pid
    log: Path

    @property
    def sid(self) -> int:
        return self.proc.pid

    def command_pid(self, timeout: float = 30.0) -> int:
        """The pid of the command itself (the guard's child)."""
        children = Path(f"/proc/{self.sid}/task/{self.sid}/children")
        return int(wait_until(lambda: children.exists() and children.read_text().split(), timeout,
                              f"{self.name} to start")[0])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the session, wait up to `grace` s, then SIGKILL what is left of it."""
        stop_session(self.sid, grace)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> OwnedProcess:
    """Start `cmd` (an argument list, never a shell string) in a new guarded session, output to `log`."""
    out = open(log, "wb")  # noqa: SIM115 - the child owns it; closed when the child exits
    proc = subprocess.Popen([sys.executable, "-c", _GUARD, *cmd], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, env={**os.environ, **(env or {})},
                            start_new_session=True)
    out.close()
    return OwnedProcess(name, proc, log)


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    found = []
    for pid in _pids():
        try:
            if os.getsid(pid) == sid and _state(pid) != "Z":
                found.append(pid)
        except OSError:
            continue
    return found


def describe(pids: list[int]) -> str:
    """One line a process (pid, parent, state, command line): what a failed wait names."""
    lines = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        lines.append(f"{pid} (parent {stat[1]}, state {stat[0]}): {cmd.strip()[:200]}")
    return "\n".join(lines) or "(gone)"


def wait_session_ends(sid: int, timeout: float) -> None:
    """Wait until no live process of session `sid` is left; TimeoutError naming those that are."""
    try:
        wait_until(lambda: not session_pids(sid), timeout, f"every process of session {sid} to exit")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; left:\n{describe(session_pids(sid))}") from None


def stop_session(sid: int, grace: float = 15.0) -> None:
    """End every process of session `sid` (one we started): SIGTERM, then SIGKILL after `grace` s."""
    _terminate(lambda: session_pids(sid), term_wait=grace, kill_wait=5.0)


def _terminate(find: Callable[[], list[int]], *, term_wait: float, kill_wait: float) -> None:
    """SIGTERM what `find` returns, wait up to `term_wait` s for it to go, then SIGKILL the rest."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        pids = find()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and find():
            time.sleep(0.2)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return text.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    return _state(pid) != "Z"


def pids_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains `marker` (a unique temp dir of ours)."""
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and _state(pid) != "Z":
            found.append(pid)
    return found


def kill_leftovers(marker: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, the processes that mention our unique `marker`; returns their pids.

    Only processes carrying our own random temp dir on their command line can match, so nothing
    of anyone else's is touched.
    """
    pids = pids_mentioning(marker)
    _terminate(lambda: pids_mentioning(marker), term_wait=grace, kill_wait=grace)
    return pids


def stop_all(procs: list["OwnedProcess | None"], ray_dirs: list[Path]) -> None:
    """End each started process's session (2 s grace), then what is left of the local Rays under
    `ray_dirs` (our own temp dirs, by pid), and remove those dirs."""
    for proc in procs:
        if proc is not None:
            proc.stop(grace=2.0)
    for folder in ray_dirs:
        kill_leftovers(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def apply_driver_env() -> None:
    """Make this process a driver that agrees with the nodes' `RAY_AUTH_MODE`.

    Ray's C++ config reads RAY_* variables once, when first used (importing ray can be enough), so
    setting the variable is not enough in a process that already imported ray: the config is
    re-read the way Ray's own `ray.init()` and test utilities do it.
    """
    os.environ.update(CLUSTER_ENV)
    from ray._raylet import Config  # noqa: PLC0415

    Config.initialize("")


def short_tmp(prefix: str = "slr-") -> Path:
    """A private temp dir with a short path (Ray's unix sockets live inside it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextmanager
def private_local_ray(prefix: str) -> Iterator[Path]:
    """For the block, the service's local Ray lives in a fresh short temp dir ($SLSWEEP_RAY_TMP);
    afterwards Ray is shut down, the variable restored, the processes left in that dir stopped
    (by pid) and the dir removed."""
    import ray

    ray_tmp, saved = short_tmp(prefix), os.environ.get("SLSWEEP_RAY_TMP")
    os.environ["SLSWEEP_RAY_TMP"] = str(ray_tmp)
    try:
        yield ray_tmp
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("SLSWEEP_RAY_TMP", None)
        else:
            os.environ["SLSWEEP_RAY_TMP"] = saved
        kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def sweep_in_private_ray(tmp: Path, name: str, spec_text: str, prefix: str, callbacks: list,
                         inside: Callable[[Any], Any] = lambda _outcome: None) -> tuple[Any, Any, Path]:
    """Write `spec_text` to `tmp/<name>.yaml`, plan it into `tmp/runs`, build the tiny model and run
    the sweep to its end with Tune `callbacks` in a private local Ray (`private_local_ray(prefix)`);
    `inside(outcome)` runs before that Ray stops. Returns (the SweepOutcome, what `inside`
    returned, the run folder)."""
    import ray

    from sweeps.driver.preflight import plan_sweep
    from sweeps.driver.service import ensure_tiny_model
    from sweeps.driver.tuner import execute

    spec = tmp / f"{name}.yaml"
    spec.write_text(spec_text)
    plan = plan_sweep(spec, runs_dir=tmp / "runs")
    ensure_tiny_model(plan.resolved.base_trial_config())
    ray.shutdown()  # a Ray an earlier test left in this process must not host the sweep
    with private_local_ray(prefix):
        outcome = execute(plan, verbose=0, callbacks=callbacks)
        return outcome, inside(outcome), tmp / "runs"


# --------------------------------------------------------------------------- Ray


@dataclass
class RayCluster:
    """A Ray cluster of `nodes` nodes on this machine, each `ray start --block` in its own session.

    Attributes:
        address: the GCS address `HOST:PORT` (what `ray.init(address=...)` and `--address` take).
        client_address: `ray://HOST:PORT` of the head's Ray Client server.
    """

    nodes: int = 2
    cpus_per_node: int = 1
    start_timeout: float = 180.0
    root: Path = field(default_factory=short_tmp)
    processes: list[OwnedProcess] = field(default_factory=list)
    address: str = ""
    client_address: str = ""

    def env(self) -> dict[str, str]:
        """Environment for driver subprocesses of this cluster (the same auth mode as the nodes)."""
        return dict(CLUSTER_ENV)

    def _node_args(self, index: int) -> list[str]:
        lo, hi = free_port_range(40)
        return [f"--temp-dir={self.root / f'n{index}'}", f"--num-cpus={self.cpus_per_node}",
                "--num-gpus=0", f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}", f"--min-worker-port={lo}",
                f"--max-worker-port={hi}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}", "--object-store-memory=200000000",
                "--disable-usage-stats", "--block"]

    def start(self) -> RayCluster:
        ip = node_ip()
        port, client_port = free_port(), free_port()
        ray_bin = str(BIN / "ray")
        # The Ray Client server (ray://) needs the `ray[client]` extra (grpcio); without it the
        # head must not be asked for one.
        client = [f"--ray-client-server-port={client_port}"] if ray_client_available() else []
        head = [ray_bin, "start", "--head", f"--port={port}", f"--node-ip-address={ip}",
                *client, "--include-dashboard=false", *self._node_args(0)]
        self.processes.append(spawn("head", head, self.root / "head.log", CLUSTER_ENV))
        self.address = f"{ip}:{port}"
        self.client_address = f"ray://{ip}:{client_port}" if client else ""
        try:
            wait_until(lambda: self._listening(ip, port), self.start_timeout, "the Ray head's GCS")
            for i in range(1, self.nodes):
                cmd = [ray_bin, "start", f"--address={self.address}", f"--node-ip-address={ip}",
                       *self._node_args(i)]
                self.processes.append(spawn(f"worker{i}", cmd, self.root / f"worker{i}.log", CLUSTER_ENV))
            wait_until(lambda: self.alive_nodes() >= self.nodes, self.start_timeout,
                       f"{self.nodes} Ray nodes to register")
            if client:
                wait_until(lambda: self._listening(ip, client_port), self.start_timeout,
                           "the Ray Client server")
        except BaseException:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes)
            self.stop()
            raise RuntimeError(f"Ray cluster did not start:\n{logs}") from None
        return self

    def _listening(self, host: str, port: int) -> bool:
        for p in self.processes:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    def alive_nodes(self) -> int:
        """Nodes the GCS reports alive (asked through the `ray` CLI in a subprocess)."""
        out = subprocess.run([str(BIN / "python"), "-c", _COUNT_NODES, self.address],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, **CLUSTER_ENV})
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def stop(self) -> None:
        """Stop every node (workers first), then anything left that mentions our temp dir.

        `ray start --block` and its raylet/GCS linger for a long time after SIGTERM; a node of a
        throwaway test cluster has nothing to save, so a short grace is followed by SIGKILL.
        """
        for p in reversed(self.processes):
            p.stop(grace=3.0)
        kill_leftovers(str(self.root))
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Counts alive nodes through the GCS without joining as a driver (no worker processes started).
_COUNT_NODES = """
import sys
from ray._private.state import GlobalState
from ray._raylet import GcsClientOptions
state = GlobalState()
state._initialize_global_state(GcsClientOptions.create(sys.argv[1], None, allow_cluster_id_nil=True,
                                                      fetch_cluster_id_if_nil=False))
print(sum(1 for n in state.node_table() if n["Alive"]))
"""


# --------------------------------------------------------------------------- MLflow


@dataclass
class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and proxied artifacts under `root`."""

    root: Path
    start_timeout: float = 120.0
    port: int = 0
    process: OwnedProcess | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> MlflowServer:
        """Start the server process without waiting for it (`start` = launch + wait)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.process = spawn("mlflow", cmd, self.root / "server.log")
        return self

    def start(self) -> MlflowServer:
        if self.process is None:
            self.launch()
        assert self.process is not None
        try:
            wait_until(self.healthy, self.start_timeout, "the MLflow server's /health")
        except BaseException:
            tail = self.process.tail()
            self.stop()
            raise RuntimeError(f"MLflow server did not start:\n{tail}") from None
        return self

    def healthy(self) -> bool:
        if self.process is not None and self.process.proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {self.process.proc.returncode}:\n{self.process.tail()}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5.0)
            kill_leftovers(str(self.root / "server.db"))

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The tiny-model sweep body the fault and interrupt drills share (each adds name, train, search).
TINY = """
task: {name: counting, eval_size: 16, train_size: 64}
model: {path: tiny}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0}
metric: {name: exact_match, mode: max}
"""
