"""The self-contained HTML report: table values, embedded images, the `report` command, and a render
in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from report_fixtures import Store, report_runs, report_store  # noqa: F401  (fixtures)
from sweeps.report import SweepRuns, ablation_table, load_sweep
from sweeps.report.commands import register
from sweeps.report.html import build_report

CHROMIUM = Path("/usr/bin/chromium")
IMG_RE = re.compile(r'<img alt="([a-z-]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def cli_report(report_store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """`report` run once through the CLI on the newest sweep (drawing six figures takes seconds)."""
    app = typer.Typer()
    register(app)
    out = tmp_path_factory.mktemp("html") / "report.html"
    res = CliRunner().invoke(app, ["report", "--runs-dir", str(report_store.runs_dir), "-o", str(out)])
    return res, out


def test_report_command_writes_and_logs_the_page(cli_report: tuple, report_store: Store) -> None:
    res, out = cli_report
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.stdout and out.stat().st_size > 50_000
    from mlflow.tracking import MlflowClient

    names = {a.path for a in MlflowClient(report_store.uri).list_artifacts(report_store.parent_run_id)}
    assert {"report.html", "spec.yaml", "search_space.yaml"} <= names


def test_page_holds_tables_images_spec_and_best_config(cli_report: tuple, report_runs: SweepRuns) -> None:
    page = cli_report[1].read_text()
    # Every mean of the main table (grouped by the varying loss params, vs hard labels) is shown.
    table = ablation_table(report_runs, baseline="family=hard")
    stats = table.rows[["exact_match.mean", "exact_match.ci_low", "exact_match.ci_high"]].to_numpy()
    for mean, lo, hi in stats:
        assert f"{mean:.4f} ± {(hi - lo) / 2:.4f}" in page
    assert page.count('<table class="slsweep-ablation">') == 1 + 4  # main + one per varying factor
    best = table.rows.loc[table.rows["exact_match.mean"].idxmax()]
    assert f"<strong>{best['exact_match.mean']:.4f} ±" in page
    assert "family=soft_label, psi=laplace, eta=0.2, lam=1" in page  # best group
    # ... with its test against the baseline, adjusted (Holm) over the table's comparisons, and the
    # power column in every table.
    assert f"adjusted p = {best['exact_match.p_adj']:.4g}" in page and "after holm" in page
    assert "<th>seeds 80%</th>" in page and "<th>p_adj</th>" in page
    # Figures: one embedded PNG per kind; nothing is fetched from elsewhere.
    images = IMG_RE.findall(page)
    assert [kind for kind, _ in images] == ["eta-curve", "psi-bars", "lambda-curve", "parallel",
                                            "importance", "learning-curves"]
    for _, data in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    # Spec and search space come from the parent run's artifacts.
    assert "metric:\n  name: exact_match\n  mode: max" in page
    assert "psi: {type: categorical, choices: [gaussian, laplace]}" in page
    assert "21 FINISHED at full budget, 1 left out: failed, 1 left out: stopped" in page


def test_report_falls_back_when_artifacts_and_params_are_missing(report_store: Store) -> None:
    runs = load_sweep("other", tracking_uri=report_store.uri)  # one hard-label trial, no artifacts
    page = build_report(runs)
    assert "No spec.yaml artifact" in page and "No search-space file was logged" in page
    assert "skipped eta-curve: unknown column &#x27;eta&#x27;" in page
    assert "skipped parallel: no parameter varies" in page
    assert "have n = 1: no interval" in page
    # psi-bars groups by its own parameter; with no psi or family to compare it says so.
    assert "skipped psi-bars: neither loss.family nor loss.psi varies" in page
    assert [k for k, _ in IMG_RE.findall(page)] == ["learning-curves"]


def test_report_command_missing_experiment_exits_2(report_store: Store, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["report", "nope", "--runs-dir", str(report_store.runs_dir),
                                   "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "error: no experiment or sweep named 'nope'" in res.stderr
    assert not (tmp_path / "r.html").exists()


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
def test_report_renders_in_headless_chromium(cli_report: tuple, tmp_path: Path) -> None:
    page = cli_report[1].read_text()
    # A probe appended to a copy records how many images the browser actually decoded.
    probe = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-decoded',"
             "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length)})</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", copy.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<table class="slsweep-ablation">') == 5
    assert dom.stdout.count("<img ") == 6 and 'data-decoded="6"' in dom.stdout
    assert "soft_label" in dom.stdout and "Best configuration" in dom.stdout

    shot = tmp_path / "shot.png"
    res = _chromium("--window-size=1200,2400", f"--screenshot={shot}", cli_report[1].as_uri(),
                    profile=tmp_path / "p2")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2400)
        lo, hi = img.convert("L").getextrema()
        assert hi - lo > 100  # text and figures, not a blank page


def test_report_command_exits_as_a_process(report_store: Store, tmp_path: Path) -> None:
    """`slsweep report` as its own process ends once the page is written and logged: MLflow's
    artifact upload leaves an idle thread-pool worker, which the fast exit (`sweeps.cli.exit_now`)
    waited for forever when it joined threads before `concurrent.futures` could stop them."""
    out = tmp_path / "page.html"
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "report", "--runs-dir", str(report_store.runs_dir),
                           "-o", str(out)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 10_000


def test_the_fast_exit_ends_idle_pool_threads_as_a_normal_exit_does() -> None:
    """`exit_now` runs threading's exit step first (concurrent.futures stops its idle workers
    there), then the atexit hooks, then exits with the status."""
    code = ("import atexit; from concurrent.futures import ThreadPoolExecutor; "
            "pool = ThreadPoolExecutor(2); pool.submit(int).result(); "
            "atexit.register(print, 'atexit ran'); from sweeps.cli import exit_now; exit_now(3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (3, "atexit ran"), proc.stderr[-2000:]
