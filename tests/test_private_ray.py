"""A sweep's private local Ray opens no network door, and dies with its driver.

Real `slsweep run` processes, each in a guarded session of its own with a private Ray temp dir.
While they run, a thread reads the kernel's socket table for every process of the driver's tree
(psutil `net_connections`, i.e. /proc/net/tcp*, udp*) every 0.5 s: the GCS, the raylet, Ray's
agents, the driver's core worker and the trial workers, sampled while they are alive. Processes
are ended by session and pid, never by name.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from cluster_utils import TINY, BIN, MlflowServer, OwnedProcess, kill_leftovers, short_tmp, spawn, wait_until
from sweeps.cli import app
from sweeps.driver.ray_env import RAY_CLUSTER_MODE_ENV, loopback_node

# Two random-search trials one at a time, short: the summary and its hints are what is checked.
HINTS = "name: lb2" + TINY + """
train: {steps: 6, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 3, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 2, seeds: 1, max_concurrent: 1, seed: 3}
"""
# One trial far too long to finish: the driver is SIGKILLed while it trains.
LONG = "name: lbkill" + TINY + """
train: {steps: 5000, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 1, seeds: 1, max_concurrent: 1, seed: 3}
"""


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's form
    return (mapped or address).is_loopback


@dataclass
class Sampler:
    """Polls the process tree under `root` (pid) every `every` s until stopped.

    Attributes:
        seen: (pid, create_time) -> command line of every process met in the tree.
        listening: (pid, command line, ip, port, kind) of every listening TCP socket and every
            unconnected UDP socket met.
    """

    root: int
    every: float = 0.5
    seen: dict[tuple[int, float], str] = field(default_factory=dict)
    listening: set[tuple[int, str, str, int, str]] = field(default_factory=set)
    rounds: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                cmd = " ".join(proc.cmdline())[:120]
                self.seen[(proc.pid, proc.create_time())] = cmd
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        self.listening.add((proc.pid, cmd, conn.laddr.ip, conn.laddr.port, "tcp"))
                    elif conn.type == socket.SOCK_DGRAM and not conn.raddr:
                        self.listening.add((proc.pid, cmd, conn.laddr.ip, conn.laddr.port, "udp"))
            except psutil.Error:
                continue
        self.rounds += 1

    def trial_workers(self) -> set[int]:
        """Pids of the trial workers seen listening (Ray titles them `ray::ImplicitFunc...`)."""
        return {pid for pid, cmd, *_ in self.listening if cmd.startswith("ray::ImplicitFunc")}

    def beyond_loopback(self) -> list[tuple[int, str, str, int, str]]:
        return sorted(s for s in self.listening if not _loopback(s[2]))

    def alive(self) -> list[str]:
        """Processes seen in the tree that are still running (same pid and start time)."""
        left = []
        for (pid, started), cmd in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {cmd}")
            except psutil.Error:
                continue
        return left


def _slsweep(args: list[str], ray_tmp: Path, log: Path) -> OwnedProcess:
    return spawn("driver", [str(BIN / "slsweep"), *args], log,
                 env={"SLSWEEP_RAY_TMP": str(ray_tmp), "OMP_NUM_THREADS": "1"})



def _end_drill(sampler, driver, ray_tmp: Path) -> None:  # noqa: ANN001 - this file's Sampler, cluster_utils' driver
    """Stop the socket sampler and the driver, then whatever the drill's private Ray left, by pid."""
    if sampler is not None:
        sampler.stop()
    driver.stop(grace=3.0)
    kill_leftovers(str(ray_tmp))
    shutil.rmtree(ray_tmp, ignore_errors=True)

def test_loopback_node_keeps_a_loopback_address_and_restores_ray() -> None:
    """Ray replaces a loopback node address with the machine's network address in cluster mode
    (Linux's default); inside `loopback_node` it keeps it, and afterwards Ray is as before."""
    from ray._private import ray_constants, services

    before = (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(RAY_CLUSTER_MODE_ENV))
    with loopback_node():
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
        assert os.environ[RAY_CLUSTER_MODE_ENV] == "0"  # for the processes Ray starts
    assert (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(RAY_CLUSTER_MODE_ENV)) == before



def test_an_empty_runs_dir_or_cache_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`SLSWEEP_RUNS_DIR=` (set but empty, e.g. `export SLSWEEP_RUNS_DIR=$UNSET`) is the default
    `./slsweep-runs`, not the current folder itself (`Path("")`), which a sweep would fill with its
    stores; likewise `SLSWEEP_CACHE_DIR=`. Through the real executable, the error names the folder."""
    import subprocess

    from sweeps.store import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.RUNS_DIR_ENV, "")
    monkeypatch.setenv(paths.CACHE_DIR_ENV, "")
    assert paths.default_runs_dir() == tmp_path.resolve() / "slsweep-runs"
    assert paths.runs_dir_source() == "--runs-dir"
    assert paths.cache_dir() == (Path.home() / ".cache" / "slsweep").resolve()
    res = subprocess.run([str(BIN / "slsweep"), "status"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, paths.RUNS_DIR_ENV: ""}, timeout=300)
    assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr)
    assert res.stderr == f"error: {tmp_path.resolve() / 'slsweep-runs'}: --runs-dir: no MLflow store here " \
                         "(run `slsweep run` first)\n", res.stderr
    assert not list(tmp_path.iterdir())  # nothing written where the command ran


@pytest.mark.slow
def test_local_sweep_listens_on_loopback_only_and_its_hints_name_the_server(tmp_path: Path) -> None:
    """Every listening socket of a local sweep's processes is on 127.0.0.1; the hints printed after
    a sweep logged to a tracking server carry `--tracking-uri`, and the printed command works."""
    spec = tmp_path / "lb2.yaml"
    spec.write_text(HINTS)
    runs, ray_tmp = tmp_path / "runs", short_tmp("sllb-")
    log = tmp_path / "driver.log"
    with MlflowServer(tmp_path / "server") as server:
        driver = _slsweep(["run", str(spec), "--runs-dir", str(runs), "--tracking-uri", server.uri, "-q"],
                          ray_tmp, log)
        sampler = None
        try:
            sampler = Sampler(driver.command_pid()).start()
            rc = driver.proc.wait(timeout=540)
        finally:
            _end_drill(sampler, driver, ray_tmp)
        out = log.read_text(errors="replace")
        assert rc == 0, out[-3000:]
        # The drill is real: the GCS, the raylet and trial workers were caught listening.
        names = " ".join(s[1] for s in sampler.listening)
        assert "gcs_server" in names and "raylet" in names, sampler.listening
        assert sampler.trial_workers(), sampler.listening
        assert not sampler.beyond_loopback(), sampler.beyond_loopback()

        uri = shlex.quote(server.uri)
        nxt = next(ln for ln in out.splitlines() if ln.startswith("Next:"))
        confirm = next(ln for ln in out.splitlines() if ln.startswith("Confirm:"))
        table = next(part.strip() for part in nxt.split("|") if "slsweep table" in part)
        report = next(part.strip() for part in nxt.split("|") if "slsweep report" in part)
        assert f"--tracking-uri {uri}" in table and f"--tracking-uri {uri}" in report, nxt
        assert f"--tracking-uri {uri}" in confirm, confirm
        assert "slsweep ui" not in nxt and server.uri in nxt, nxt  # the server is its own UI
        # The printed command reads this sweep (it would read an empty run folder without the flag).
        res = CliRunner().invoke(app, shlex.split(table.split("Next:")[-1].strip())[1:])
        assert res.exit_code == 0 and "eta" in res.output, res.output
    print(f"\nloopback: {len(sampler.listening)} listening sockets in {len(sampler.seen)} processes over "
          f"{sampler.rounds} samples, all on loopback:\n" +
          "\n".join(f"  {kind} {ip}:{port}  {pid} {cmd[:70]}" for pid, cmd, ip, port, kind in sorted(sampler.listening)))


# Ray's two agents (children of the raylet) notice the raylet's death within a second, then report
# it to the driver through the GCS, which is dead too: `ray._private.utils.publish_error_to_driver`
# waits its fixed 60 s timeout before they exit (docs/reliability.md, R2).
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
AGENT_REPORT_TIMEOUT_S = 60


@pytest.mark.slow
def test_driver_sigkill_leaves_no_ray_process_behind(tmp_path: Path) -> None:
    """SIGKILL to a real driver mid-trial: the GCS, raylet, Ray's helpers and the trial worker
    exit within seconds (Ray's fate sharing); Ray's two agents after Ray's 60 s report timeout.
    Nothing listened beyond loopback meanwhile. The figures are in docs/reliability.md (R2)."""
    spec = tmp_path / "lbkill.yaml"
    spec.write_text(LONG)
    ray_tmp = short_tmp("slkl-")
    driver = _slsweep(["run", str(spec), "--runs-dir", str(tmp_path / "runs"), "-q"], ray_tmp,
                      tmp_path / "driver.log")
    sampler = None
    gone: dict[str, float] = {}  # process -> seconds from the kill to its exit
    try:
        sampler = Sampler(driver.command_pid()).start()

        def training() -> bool:
            if driver.proc.poll() is not None:
                raise AssertionError(f"driver exited early:\n{driver.tail()}")
            return bool(sampler.trial_workers())

        wait_until(training, 300, "a trial worker to start", every=0.5)
        time.sleep(2)  # a few more samples with the trial training
        sampler.stop()
        tree = sampler.alive()
        psutil.Process(driver.command_pid()).kill()  # SIGKILL
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < AGENT_REPORT_TIMEOUT_S + 30:
            alive = set(sampler.alive())
            for proc in set(tree) - alive - gone.keys():
                gone[proc] = time.monotonic() - killed_at
            if not alive:
                break
            time.sleep(0.1)
        left = sampler.alive()
    finally:
        _end_drill(sampler, driver, ray_tmp)
    print("\nSIGKILL: seconds from the kill to each process's exit:\n" +
          "\n".join(f"  {t:5.1f}  {p[:90]}" for p, t in sorted(gone.items(), key=lambda kv: kv[1])))
    assert not left, left  # everything exited by itself
    assert any("gcs_server" in p for p in gone) and any("ray::ImplicitFunc" in p for p in gone)
    agents = {p: t for p, t in gone.items() if p.split(" ", 1)[1].startswith(AGENTS)}
    others = {p: t for p, t in gone.items() if p not in agents}
    assert max(others.values()) < 15, others  # a few seconds (measured: under 3 s)
    assert max(agents.values(), default=0) < AGENT_REPORT_TIMEOUT_S + 30, agents
    assert not sampler.beyond_loopback(), sampler.beyond_loopback()
