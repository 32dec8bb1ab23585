"""`slsweep`: run sweeps, inspect them, and export what they found.

Exit status: 0 ok, 1 the work failed, 2 bad input (one message, no traceback).
"""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from sweeps.errors import SlsweepError, SweepFailed, pydantic_message
from sweeps.report.choices import ADJUSTMENTS
from sweeps.report.commands import RegistryCommand, registry_option

# Plain (click) help: flags show as flags (`-q, --quiet`), not `<bool>`; `-h` works everywhere.
app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Sweeps and ablations for soft-label losses on numerical tokens.")
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """One line on stderr, no traceback: a user-caused error exits 2, a failed sweep 1, a sweep
    stopped by a signal 128 + signal (130 Ctrl-C, 143 SIGTERM)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sweeps.driver.signals import SignalStop, SweepInterrupted, exit_code

        try:
            return fn(*args, **kwargs)
        except SlsweepError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except SweepFailed as exc:
            command = getattr(exc, "resume_command", None)  # set by the service: this sweep, this folder
            text = str(exc).replace("`slsweep resume`", f"`{command}`") if command else str(exc)
            typer.echo(f"error: {text}", err=True)
            raise typer.Exit(1) from None
        except (SweepInterrupted, SignalStop) as exc:  # SignalStop: a late second signal while a stopped sweep closed
            forced = getattr(exc, "forced", True)
            typer.echo(f"interrupted ({signal.Signals(exc.signum).name}{', forced' if forced else ''}): "
                       f"{_resume_advice(exc)}", err=True)
            raise typer.Exit(exit_code(exc.signum)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # Ray, MLflow, peft, the OS at run time: one line, exit 1
            from sweeps.errors import runtime_failure

            if isinstance(exc, BrokenPipeError) and _stdout_reader_left():
                raise typer.Exit(128 + signal.SIGPIPE) from None  # `slsweep ... | head`: quiet, as Unix tools
            line = runtime_failure(exc)
            if line is None:
                raise  # a bug: its traceback is the report
            # the service's `slsweep resume ID [--runs-dir X]` once Tune saved the sweep; else no promise
            command = getattr(exc, "resume_command", None)
            typer.echo(f"error: {line}" + (f"; what the sweep saved is kept: `{command}` continues it"
                                           if command else ""), err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _stdout_reader_left() -> bool:
    """Whether stdout is a pipe whose reader has gone (`slsweep table | head -3`); if so, stdout is
    pointed at /dev/null so that nothing later (the exit's flush) fails on it again."""
    import os
    import select
    import sys

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):  # a pipe without readers
            return False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return True
    except (OSError, ValueError):  # stdout is not a file (captured output)
        return False


def _resume_advice(exc: BaseException) -> str:
    """What to run after a stop: the service's `slsweep resume ID [--runs-dir X]`, or (None) that
    nothing was saved to resume from."""
    command = getattr(exc, "resume_command", "slsweep resume")
    return f"run `{command}` to finish the sweep" if command else "nothing was saved yet: run the sweep again"


RunsDir = typer.Option(None, "--runs-dir", help="Run folder (default ./slsweep-runs or $SLSWEEP_RUNS_DIR).")
TrackingUri = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: SQLite in the run folder).")
Address = typer.Option(None, "--address", help="Ray cluster to join: ray://HOST:10001, HOST:PORT or auto (default: a private local Ray).")
Quiet = typer.Option(False, "--quiet", "-q", help="Progress bars and the summary only: the default (kept for scripts).")
Verbose = typer.Option(False, "--verbose", "-v", help="Also Ray Tune's status tables and the log lines of Ray, "
                       "Tune, Optuna and MLflow.")


def _verbosity(quiet: bool, verbose: bool) -> int:
    """Tune's verbosity: 0 (progress bars and summary; the default, `-q`), 1 with `-v`.

    Raises SlsweepError (exit 2) for `-q` and `-v` together: they contradict each other."""
    if quiet and verbose:
        raise SlsweepError("-q/--quiet and -v/--verbose: give one (-q is the default)")
    return 1 if verbose else 0
AllowPlugins = typer.Option(False, "--allow-plugins", help="Import the plug-ins the spec names (tasks, loss "
                            "families, psi shapes by 'package.module:attr'): they run their own code. Also "
                            "SLSWEEP_ALLOW_PLUGINS=1.")


def _builtin(sub: str, incomplete: str) -> list[str]:
    """Shell completion: the built-in specs (or trial configs, `sub="trials"`) starting with
    `incomplete` (the shell completes file names besides)."""
    from sweeps.config.spec import packaged_spec_dir

    return sorted(p.stem for p in (packaged_spec_dir() / sub).glob("*.yaml") if p.stem.startswith(incomplete))


def _allow(allow: bool) -> None:
    """`--allow-plugins`: this process and the Ray workers it starts may import plug-ins."""
    if allow:
        from sweeps.plugins import allow_plugins

        allow_plugins()


@app.command()
@user_errors
def run(
    spec: Optional[str] = typer.Argument(None, metavar="SPEC", autocompletion=lambda incomplete: _builtin("", incomplete), help="Sweep spec: a YAML file or a built-in spec's name (`slsweep list`); default: the built-in default."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help="Spec fields to override, e.g. train.steps=50 search.num_samples=4 (validated like the file, recorded with the sweep)."),
    address: Optional[str] = Address,
    tracking_uri: Optional[str] = TrackingUri,
    runs_dir: Optional[Path] = RunsDir,
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (default: the spec's)."),
    search_seed: Optional[int] = typer.Option(None, "--search-seed", min=0, help="The sampler's seed (default: the spec's search.seed, else a fresh one per sweep, printed and recorded)."),
    quiet: bool = Quiet,
    verbose: bool = Verbose,
    allow_plugins: bool = AllowPlugins,
) -> None:
    """Run a sweep (no argument: the built-in default on the tiny model).

    \b
    Examples:
      slsweep run                                   # the built-in default
      slsweep run default train.steps=200 search.num_samples=4
      slsweep run my_spec.yaml --search-seed 7 -v   # -v: with Ray Tune's tables
    """
    from sweeps.driver.service import builtin_spec_note, run_sweep

    _allow(allow_plugins)
    try:
        outcome = run_sweep(spec, address=address, tracking_uri=tracking_uri, runs_dir=runs_dir,
                            experiment=experiment, verbose=_verbosity(quiet, verbose), overrides=overrides or (),
                            search_seed=search_seed)
    except SlsweepError as err:  # `run counting` offline: say it is the GPU spec, and what runs here
        raise builtin_spec_note(err) from None
    _exit_for(outcome)


def _writable_folder(path: Path, name: str) -> None:
    """Refuse (exit 2, naming the argument) a folder argument that is a file or cannot be made."""
    from sweeps.store.uri import folder_problem

    problem = folder_problem(path)
    if problem:
        raise SlsweepError(f"{name}: {problem}")


def _exit_for(outcome: Any) -> None:  # outcome: sweeps.driver.service.RunSummary
    """Exit status of a sweep that ran: 128 + signal if a signal stopped it (resumable), 1 with
    one line if every trial failed."""
    from sweeps.driver.signals import exit_code

    if outcome.interrupted:
        raise typer.Exit(exit_code(outcome.interrupted))
    if outcome.failed_all:
        raise SweepFailed(outcome.failure)


@app.command()
@user_errors
def resume(
    sweep_id: Optional[str] = typer.Argument(None, help="Sweep to resume (default: the most recent)."),
    runs_dir: Optional[Path] = RunsDir,
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (default: the one the sweep was started with)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: the one the sweep was started with)."),
    quiet: bool = Quiet,
    verbose: bool = Verbose,
    allow_plugins: bool = AllowPlugins,
) -> None:
    """Resume an interrupted sweep: finished trials are kept, unfinished ones continue."""
    from sweeps.driver.service import resume_sweep

    _allow(allow_plugins)
    outcome = resume_sweep(sweep_id, runs_dir=runs_dir, verbose=_verbosity(quiet, verbose),
                           address=address, tracking_uri=tracking_uri)
    _exit_for(outcome)


@app.command()
@user_errors
def status(
    runs_dir: Optional[Path] = RunsDir,
    tracking_uri: Optional[str] = TrackingUri,
) -> None:
    """Sweeps recorded in the MLflow store, newest first, with trial counts."""
    from sweeps.driver.service import sweep_status

    _check_store(tracking_uri)

    typer.echo(sweep_status(runs_dir=runs_dir, tracking_uri=tracking_uri))


def _check_store(tracking_uri: str | None, runs_dir: Path | None = None, *, local: bool = False) -> None:
    """A --tracking-uri with a missing database driver or an unreachable server, or a run folder
    with no store (`local`): one line, exit 2, before MLflow and pandas are imported (the report commands do
    the same in `report.commands._precheck`)."""
    if tracking_uri:
        from sweeps.store.uri import check_tracking_uri

        check_tracking_uri(tracking_uri)
    elif local:
        from sweeps.store.paths import resolve_tracking_uri

        resolve_tracking_uri(None, runs_dir)


@app.command("list")
@user_errors
def list_builtin() -> None:
    """Built-in sweep specs and search spaces."""
    from sweeps.driver.service import builtin_listing

    typer.echo(builtin_listing())


@app.command()
@user_errors
def trial(
    config: str = typer.Argument(..., metavar="CONFIG", autocompletion=lambda incomplete: _builtin("trials", incomplete), help="Trial config: a YAML file (task, model, train, loss, seed) or a built-in trial's name (`slsweep list`)."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help="Config fields to override, e.g. train.steps=20 loss.eta=0.2."),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Save the state here at each evaluation (weights included, also at the last step)."),
    resume_from: Optional[Path] = typer.Option(None, "--resume-from", help="A checkpoint folder to continue from: one step's (DIR/step_000100) or the --checkpoint-dir DIR itself (its newest step)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write final metrics and history as JSON."),
    allow_plugins: bool = AllowPlugins,
) -> None:
    """Run one trial without Ray or MLflow, with a progress bar (for debugging)."""
    from sweeps.driver.service import run_single_trial
    from sweeps.store.uri import output_file_problem

    _allow(allow_plugins)
    resume_from = resume_from and _newest_step(resume_from)
    # what the trial writes or reads, refused before it trains (not after)
    for flag, problem in (("--output", output and output_file_problem(output)),
                          ("--resume-from", resume_from and _checkpoint_folder_problem(resume_from))):
        if problem:
            raise SlsweepError(f"{flag}: {problem}")
    if checkpoint_dir is not None:
        _writable_folder(checkpoint_dir, "--checkpoint-dir")
    result = run_single_trial(config, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                              overrides=overrides or ())
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)  # checked creatable above, as `report -o` does
        output.write_text(json.dumps({"metrics": result.metrics, "history": result.history}, indent=2))


def _newest_step(folder: Path) -> Path:
    """`folder`, or, when it is a `--checkpoint-dir` folder (no checkpoint itself, `step_NNNNNN`
    checkpoints inside), its newest step, said on stderr."""
    from sweeps.trial import STATE_FILE

    try:
        if not folder.is_dir() or (folder / STATE_FILE).is_file():
            return folder
        steps = sorted(p for p in folder.glob("step_*") if (p / STATE_FILE).is_file())
    except OSError:  # a symlink loop, no permission: `_checkpoint_folder_problem` says which
        return folder
    if steps:
        typer.echo(f"note: --resume-from {folder}: its newest checkpoint, {steps[-1].name}", err=True)
        return steps[-1]
    return folder


def _checkpoint_folder_problem(folder: Path) -> str | None:
    """Why `folder` is not a trial checkpoint `slsweep trial --checkpoint-dir` wrote, or None."""
    from sweeps.store.paths import path_problem
    from sweeps.trial import STATE_FILE

    problem = path_problem(folder)
    if problem is not None:
        return problem
    folder = Path(folder).expanduser()
    hint = "a folder `--checkpoint-dir` wrote, e.g. DIR/step_000100"
    if not folder.exists():
        return f"{folder}: no such folder ({hint})"
    if not folder.is_dir():
        return f"{folder}: not a folder ({hint})"
    if not (folder / STATE_FILE).is_file():
        return f"{folder}: not a trial checkpoint (no {STATE_FILE}; {hint})"
    return None


@app.command()
@user_errors
def data(
    spec: Optional[str] = typer.Argument(None, metavar="SPEC", autocompletion=lambda incomplete: _builtin("", incomplete), help="Sweep spec: a YAML file or a built-in spec's name (default: the built-in default)."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help="Spec fields to override, as for `run` (e.g. task.eval_size=16)."),
    n: int = typer.Option(8, "-n", "--examples", min=0, help="Examples shown per split (figures cover the whole split)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text (schema: docs/data.md)."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Also write a contact sheet PNG here (images, boxes, questions, answers)."),
    family: Optional[str] = typer.Option(None, "--family", help="Mark the soft targets of this loss family (default: the spec's)."),
    allow_plugins: bool = AllowPlugins,
) -> None:
    """Show the spec's task data as a trial builds it: image size and mode, prompt, answer tokens
    (soft targets marked), answer range and soft-target coverage per split. Writes nothing else.

    \b
    Examples:
      slsweep data counting model.path=tiny task.eval_size=16
      slsweep data my_spec.yaml -n 4 --sheet sheet.png
      slsweep data my_spec.yaml --json > data.json
    """
    from sweeps.driver.service import builtin_spec_note
    from sweeps.preview import preview_command

    _allow(allow_plugins)
    try:
        typer.echo(preview_command(spec, overrides or (), n=n, as_json=as_json, sheet=sheet, family=family))
    except SlsweepError as err:
        raise builtin_spec_note(err) from None


@app.command("make-tiny-model")
@user_errors
def make_tiny_model(
    path: Path = typer.Argument(..., help="Folder to write the model, tokenizer and processor into."),
    arch: Optional[str] = typer.Option(None, "--arch", show_default=False, help="A tiny architecture of "
                                       "sweeps.models.tiny.TINY_ARCHS (default llava; a wrong name lists them)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Build a tiny llava model (sweeps.models.around) around this tokenizer folder (a real model's "
        "tokenizer.json): checks a tokenizer with the loss families before a GPU sweep."),
) -> None:
    """Build a tiny randomly initialised image-text-to-text model offline and save it."""
    _writable_folder(path, "PATH")
    from sweeps.models.tiny import DEFAULT_TINY_ARCH, TINY_ARCHS

    arch = arch or DEFAULT_TINY_ARCH
    if arch not in TINY_ARCHS:
        raise SlsweepError(f"--arch: unknown architecture {arch!r} ({', '.join(TINY_ARCHS)})")
    if tokenizer is not None:
        from sweeps.models.around import AROUND_ARCH, build_tiny_model_around

        if arch != AROUND_ARCH:
            raise SlsweepError(f"--tokenizer: only the {AROUND_ARCH} architecture takes another tokenizer")
        out = build_tiny_model_around(path, tokenizer, seed=seed)
        typer.echo(f"saved tiny {AROUND_ARCH} model around the tokenizer of {tokenizer} to {out}")
        return
    from sweeps.models import build_tiny_model

    out = build_tiny_model(path, arch=arch, seed=seed)
    typer.echo(f"saved tiny {arch} model to {out}")


@app.command("make-model")
@user_errors
def make_model(
    preset: str = typer.Argument(..., metavar="PRESET", help="smolvlm-256m, smolvlm-500m, qwen2-vl-2b, llava-1.5-7b "
                                 "or paligemma-3b (sizes and sources: docs/models.md)."),
    path: Path = typer.Argument(..., metavar="DIR", help="Folder to write the model, tokenizer and processor into."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="Text and vision layers each (default: the "
                                         "published depth); widths, vocabulary and processor stay real."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="A tokenizer folder to use instead of the "
                                             "preset's (e.g. the real model's tokenizer.json)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
) -> None:
    """Build a published image-text-to-text architecture at its real size with random weights, offline.

    \b
    Examples:
      slsweep make-model qwen2-vl-2b /tmp/qwen2vl --layers 2   # real widths, vocabulary and processor
      slsweep make-model smolvlm-256m /tmp/smolvlm             # full size (256M parameters)
    The folder is a model path like any other (model.path in a spec or trial config).
    """
    from sweeps.models.preset_registry import MARKER_FILE, get_preset

    get_preset(preset)  # an unknown name is one line before torch is imported
    _writable_folder(path, "DIR")
    from sweeps.models.presets import build_preset_model

    out = build_preset_model(preset, path, layers=layers, tokenizer=tokenizer, seed=seed)
    info = json.loads((out / MARKER_FILE).read_text())
    typer.echo(f"saved {preset} ({info['parameters'] / 1e6:.1f}M parameters"
               f"{f', --layers {layers}' if layers else ''}) to {out}\ntokenizer: {info['tokenizer']}")


@app.command()
@user_errors
def ui(
    runs_dir: Optional[Path] = RunsDir,
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback unless told otherwise)."),
    port: int = typer.Option(5000, "--port", help="Port to serve on."),
) -> None:
    """Open the MLflow UI on the run folder's store (the URL is printed once it answers; Ctrl-C
    or SIGTERM stops the server and its workers)."""
    from sweeps.store.ui import serve_ui

    raise typer.Exit(serve_ui(runs_dir, host, port, echo=typer.echo))


@app.command(cls=RegistryCommand)
@user_errors
def confirm(
    sweep: Optional[str] = typer.Argument(None, help="The search sweep (id, or experiment name: its "
                                          "newest sweep). Default: the most recent sweep."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help="Confirm-spec fields to override, as for `run` (e.g. train.steps=100 for a quick check; validated, recorded, printed)."),
    top: int = typer.Option(3, "--top", help="How many of the best configurations to rerun."),
    seeds: int = typer.Option(5, "--seeds", help="Seeds per configuration (fresh: after the search's)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Also run this configuration and "
                                           "compare each with it, e.g. loss=hard."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Rank by this metric (default: the sweep's)."),
    first_seed: Optional[int] = typer.Option(None, "--first-seed", help="First seed (default: after every seed the search used)."),
    adjust: Annotated[str, registry_option(ADJUSTMENTS, "p-value adjustment of the printed table, one of:")] = "holm",
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    runs_dir: Optional[Path] = RunsDir,
    quiet: bool = Quiet,
    verbose: bool = Verbose,
    allow_plugins: bool = AllowPlugins,
) -> None:
    """Search, then confirm: rerun the TOP best configurations of a search sweep (plus a baseline)
    with SEEDS fresh seeds at full budget (or the train.steps an override sets) as a new, linked
    sweep; print its adjusted table.

    \b
    Examples:
      slsweep confirm SWEEP --top 3 --seeds 5 --baseline loss=hard
      slsweep confirm SWEEP train.steps=100 --top 1 --seeds 2 --baseline loss=hard   # a quick check
    """
    _allow(allow_plugins)
    _check_store(tracking_uri, runs_dir, local=True)
    if sweep is not None and "=" not in sweep and tracking_uri is None:  # a misspelt sweep: before MLflow
        from sweeps.report.commands import precheck_experiment

        precheck_experiment(sweep, runs_dir)
    from sweeps.driver.confirm import run_confirm
    from sweeps.driver.service import split_spec_args

    sweep, words = split_spec_args(sweep, overrides or ())  # `confirm train.steps=100`: the latest sweep
    text, summary = run_confirm(sweep, top=top, seeds=seeds, baseline=baseline, metric=metric,
                                first_seed=first_seed, runs_dir=runs_dir, tracking_uri=tracking_uri,
                                adjust=adjust, verbose=_verbosity(quiet, verbose), overrides=words)
    if text:
        typer.echo(text)
    _exit_for(summary)


def _register_reports() -> None:
    from sweeps.report.commands import register

    register(app)


_register_reports()


def _click_errors() -> tuple[type[Exception], type[Exception], tuple[type[Exception], ...]]:
    """click's ClickException, UsageError and (click >= 8.2) NoArgsIsHelpError, from the click
    this typer parses with (typer >= 0.2x carries its own copy; older ones use click itself)."""
    import sys

    mro = typer.BadParameter.__mro__
    usage = next(c for c in mro if c.__name__ == "UsageError")
    base = next(c for c in mro if c.__name__ == "ClickException")
    no_args = getattr(sys.modules[usage.__module__], "NoArgsIsHelpError", None)
    return base, usage, (no_args,) if no_args else ()


def main() -> None:
    """The `slsweep` entry point. click's own input errors (an unknown option, a value out of
    range or not among the choices) are one line on stderr and exit 2, like every other input
    error, instead of click's usage box; a bare `slsweep` still prints the help."""
    import sys

    from sweeps.textout import ascii_fallback

    ascii_fallback()  # "↑", "Δ", "±" as ASCII stand-ins where stdout cannot encode them
    click_error, usage_error, help_only = _click_errors()
    try:
        status = app(standalone_mode=False)  # click returns the exit status instead of exiting
    except help_only as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except click_error as exc:
        ctx = getattr(exc, "ctx", None)
        see = f" (see `{ctx.command_path} --help`)" if isinstance(exc, usage_error) and ctx is not None else ""
        message = pydantic_message(' '.join(exc.format_message().split()))  # type: ignore[attr-defined]
        typer.echo(f"error: {message}{see}", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        sys.exit(1)
    exit_now(status if isinstance(status, int) else 0)


def exit_now(status: int) -> None:
    """End the process with `status` as a normal exit would, minus the interpreter's teardown.

    What a normal exit does first still happens, in its order: threading's own exit step (the
    callbacks registered with it run, e.g. `concurrent.futures` ending its idle pool threads, such
    as MLflow's artifact uploads leave; then the other non-daemon threads are joined), the `atexit`
    hooks run (our local Ray's stop, logging's flush, MLflow's and Ray's own), and stdout/stderr
    are flushed; then `os._exit`. Skipped: destroying every module and object, which after a sweep
    (torch, transformers, Ray, pandas loaded) takes 1-1.5 s and writes nothing.
    """
    import atexit
    import os
    import sys
    import threading

    # CPython 3.11's finalization calls exactly these two first (Py_FinalizeEx: threading._shutdown,
    # then the atexit callbacks); joining the threads without the first hung on idle pool workers.
    threading._shutdown()  # noqa: SLF001 - the interpreter's own exit sequence
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own exit sequence, public in effect
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`slsweep ... | head`), a closed stream
            pass
    os._exit(status)


if __name__ == "__main__":
    main()
