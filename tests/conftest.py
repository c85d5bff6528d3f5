"""Shared fixtures: tiny real data, a real MLflow store in tmp_path, a clean plugin manager."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vaekit.audio import AudioParams, waveforms_to_mel_db  # noqa: E402
from vaekit.config import RunConfig  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


def docs_page(name: str) -> str:
    """The Markdown of ``docs/NAME``: the reference pages that doc-drift tests hold to the code."""
    return (DOCS / name).read_text()


def make_tones(n: int, audio: AudioParams, seed: int = 0) -> np.ndarray:
    """Decaying tones with a little noise: real audio with structure a VAE can learn."""
    rng = np.random.default_rng(seed)
    t = np.arange(audio.samples) / audio.sr
    freq = rng.uniform(100, 900, size=(n, 1))
    decay = rng.uniform(1, 6, size=(n, 1))
    y = np.sin(2 * np.pi * freq * t) * np.exp(-decay * t) + 0.01 * rng.standard_normal((n, audio.samples))
    return y.astype(np.float32)


def write_notebook_data(directory: Path, n_train=96, n_test=32, seed=0) -> Path:
    """A notebook-format dataset of real mel spectrograms (50×50 at the notebook's parameters)."""
    audio = AudioParams()
    mel = waveforms_to_mel_db(make_tones(n_train + n_test, audio, seed), audio)
    lo, hi = float(mel.min()), float(mel.max())
    x = (mel - lo) / (hi - lo)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "x_train.npy", x[:n_train])
    np.save(directory / "x_test.npy", x[n_train:])
    np.save(directory / "min_values.npy", np.float32(lo))
    np.save(directory / "max_values.npy", np.float32(hi))
    return directory


@pytest.fixture(scope="session")
def notebook_data(tmp_path_factory) -> Path:
    """A read-only tiny notebook-format dataset shared by the session (copy it to modify it)."""
    return write_notebook_data(tmp_path_factory.mktemp("data") / "nb")


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store in tmp_path (the cwd, so artifacts land there too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def vaekit_cache(tmp_path, monkeypatch) -> Path:
    """Each test's dataset cache (synthetic voices, prepared folders) is in tmp_path, never ~/.cache/vaekit."""
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "vaekit-cache"))
    return tmp_path / "vaekit-cache"


@pytest.fixture(autouse=True)
def clean_plugins(monkeypatch):
    """Each test starts with a freshly built plugin manager and ends with no active MLflow run."""
    from vaekit.plugins import reset_plugin_manager

    # setenv first so monkeypatch restores the variable even if a test (--plugin) exports it.
    monkeypatch.setenv("VAEKIT_PLUGINS", "")
    monkeypatch.delenv("VAEKIT_PLUGINS")
    reset_plugin_manager()
    yield
    reset_plugin_manager()
    if "mlflow" in sys.modules:
        import mlflow

        assert mlflow.active_run() is None, "a test left an MLflow run active"


def tiny_config(data, store, **overrides) -> RunConfig:
    """A run small enough for CI: one epoch, one sample, a quick vocoder."""
    settings = dict(data=str(data), tracking_uri=store, epochs=1, batch_size=32, samples=1,
                    options={"vocoder": {"n_iter": 4}})
    settings.update(overrides)
    return RunConfig(**settings)


def tiny_run(data, where: Path, **overrides) -> tuple[str, str]:
    """One finished run of ``tiny_config(data, store, **overrides)`` into a sqlite store in ``where``:
    (run_id, tracking URI).  Run from ``where``, so nothing it writes can land in the tests' working
    directory; the plugin manager is the caller's (a test may have loaded a plugin file into it)."""
    from vaekit.commands.run import run

    cwd = os.getcwd()
    os.chdir(where)
    try:
        uri = f"sqlite:///{where / 'mlflow.db'}"
        return run(tiny_config(data, uri, **overrides), progress=False).run_id, uri
    finally:
        os.chdir(cwd)


def run_contents(uri: str, run_id: str) -> dict:
    """What a run holds: its params, metric and tag names (MLflow's own tags aside) and every artifact path."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)

    def artifacts(path=None):
        for f in client.list_artifacts(run_id, path):
            yield from (artifacts(f.path) if f.is_dir else [f.path])

    return {"params": dict(run.data.params), "metrics": sorted(run.data.metrics), "status": run.info.status,
            "tags": sorted(t for t in run.data.tags if not t.startswith("mlflow.")), "artifacts": sorted(artifacts())}


@pytest.fixture(scope="session")
def notebook_run(notebook_data, tmp_path_factory) -> tuple[str, str]:
    """One finished tiny run of the notebook's model and defaults (conv2, mse-kl, griffinlim with 4 iterations;
    2 epochs, 2 samples) in a store folder of its own, shared by the session: (run_id, tracking URI).

    Read-only: a test that logs into a run or changes it trains its own.  (Not a copy of this store: MLflow
    caches a run's artifact repository by run id for the whole process, so a copy's run, which has the same
    id, would write into this one's folder.)  At the end of the session the run must hold what it held."""
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    try:
        shared = tiny_run(notebook_data, tmp_path_factory.mktemp("notebook-run"), epochs=2, samples=2)
    finally:
        reset_plugin_manager()
    made = run_contents(shared[1], shared[0])
    yield shared
    assert run_contents(shared[1], shared[0]) == made, "a test changed the shared notebook_run: use copy_of_run"


def run_cli(*args, cwd=None, env=None, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m vaekit ARGS`` in a real subprocess; text output captured."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def error_line(result) -> str:
    """The one ``Error:`` line of a failed command, checking it failed cleanly (no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith(lines[0] + "\n"), result.stderr  # the message is one line, and the last
    return lines[0]


def runs_in(store: str) -> list:
    """Every run in the store, any experiment ([] when the store was never created)."""
    from mlflow.tracking import MlflowClient

    from vaekit.tracking import sqlite_path

    if not sqlite_path(store).exists():
        return []
    client = MlflowClient(store)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


#: How long a test waits for a process or server before calling it hung: far beyond any wait seen on a loaded
#: 2-core machine, and never reached when things work (not a speed check: those use :func:`wall_limit`).
HANG = 600


def restore_sigint() -> None:
    """``preexec_fn`` of a child process a test stops with Ctrl-C (SIGINT): SIGINT's default action again.

    A background job of a non-interactive shell (``(pytest &)``, ``setsid pytest &``, some CI harnesses) starts
    with SIGINT ignored, and its children inherit that: the Ctrl-C under test would then do nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wall_limit(seconds: float) -> float:
    """A wall-clock limit that is ``seconds`` on an idle machine, stretched by how many runnable tasks share each
    core now (the 1-minute load average per CPU, when above 1): at load 8 on 2 cores a process gets about a
    quarter of a core, so a stop that takes 0.8 s idle takes about 3 s.  On an idle or a many-core machine the
    limit is ``seconds`` as written."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def required(what: str, how: str) -> None:
    """``what`` is missing: skip where tests run by hand, fail in CI (``CI`` set, as ``.ci/run`` does), where
    ``.ci/run`` installs it: a skip there would hide a broken set-up."""
    message = f"{what} is missing: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: nothing the set-up installs may be skipped)")
    pytest.skip(message, allow_module_level=True)  # also at a module's top (tests/test_backends.py)


def chromium() -> str:
    """Debian's Chromium, found as ``.ci/run`` looks for it (``command -v chromium``: the first on PATH)."""
    import shutil

    found = shutil.which("chromium")
    if found is None:
        required("chromium", "apt-get install chromium (.ci/run does)")
    return found


#: Headless Chromium as every browser test runs it (no sandbox in CI's container; autoplay for the audio checks).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]


def chromium_browser():
    """A context with Debian's Chromium (:func:`chromium`) launched through Playwright (its pip wheel's driver):
    the browser, closed on exit.  Either missing: skipped by hand, failed in CI (:func:`required`)."""
    import contextlib

    try:
        import playwright.sync_api as playwright
    except ImportError:
        required("playwright", "pip install -e '.[test]' (README's set-up)")
    browser_path = chromium()

    @contextlib.contextmanager
    def launched():
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()

    return launched()


def in_process(code: str, env=None) -> str:
    """Run Python ``code`` in a fresh process (its own Keras backend); its stdout.  Fails the test with the end of its
    stderr if it exits non-zero."""
    import textwrap

    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answered(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180, what: str = "the server",
                        every: float = 0.5) -> None:
    """Poll ``url`` (every ``every`` seconds) until the server ``proc`` answers it with a 2xx; fail the test with
    the end of its ``log`` if it exits first, or once ``timeout`` seconds have passed."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer {url} within {timeout:g} s")
            time.sleep(every)


def models_serve(model: str, tracking_uri: str, where: Path, wait: float = 180):
    """A context running a real ``mlflow models serve -m MODEL`` on 127.0.0.1 (from ``where``): its base URL,
    once it answers ``/ping``; stopped (with its workers) on exit.  The server imports this checkout's vaekit (it
    runs ``uvicorn`` from PATH, whichever Python that is), as the tests do."""
    import contextlib

    @contextlib.contextmanager
    def serving():
        port = free_port()
        log = open(where / "serve.log", "w+")
        checkout = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local",
                                 "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                cwd=where, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_answered(proc, f"{base}/ping", where / "serve.log", wait, "mlflow models serve")
            yield base
        finally:
            stop_process_group(proc)
            log.close()

    return serving()


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a server started with ``start_new_session=True`` and every worker it forked."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
