"""Nothing lost and nothing unbounded on export, register, reconstruct, explore and the logged models (issue 22).

One tiny finished run (dense encoder and decoder, module-scoped) is shared by the module; every
command runs for real (the CLI in-process, or a real process where the failure needs one) against a
real sqlite MLflow store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import error_line, tiny_run, wait_until_answered

LATENT = 4


@pytest.fixture(scope="module")
def trained(notebook_data, tmp_path_factory):
    """One finished tiny run: (run_id, tracking URI, the store's folder)."""
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    where = tmp_path_factory.mktemp("store")
    small = {"units": 16, "layers": 1}
    run_id, uri = tiny_run(notebook_data, where, encoder="dense", decoder="dense", latent_dim=LATENT, samples=0,
                           options={"encoder": small, "decoder": small, "vocoder": {"n_iter": 4}})
    return run_id, uri, where


def cli(*args):
    from vaekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. export --force --------------------------------------------------------------------------------

def test_export_force_replaces_only_an_earlier_export_never_a_users_folder_or_the_store(trained, tmp_path,
                                                                                        monkeypatch):
    run_id, uri, where = trained
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    line = error_line(cli("export", run_id, mine, "--force", "--tracking-uri", uri))
    assert line == (f"Error: {mine}: not a folder vaekit export wrote (it has no vaekit-export.json); --force replaces "
                    "only an earlier export: remove it yourself or choose another OUT")
    assert tree(mine) == {"thesis.txt": b"years of work"}

    # The store's own folder, named as the issue found it (--tracking-uri sqlite:///STOREDIR/mlflow.db): untouched,
    # even where it holds a marker.
    (where / "vaekit-export.json").write_text('{"vaekit_export": 1}')
    before = tree(where)
    line = error_line(cli("export", run_id, where, "--force", "--tracking-uri", uri))
    assert line == (f"Error: {where}: holds the tracking store ({where / 'mlflow.db'}); an export never replaces it: "
                    "choose another OUT")
    assert tree(where) == before
    (where / "vaekit-export.json").unlink()

    # `.` and a folder above it: one line (it was a traceback), with --force or without.
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (".", ".."):
        for force in ([], ["--force"]):
            line = error_line(cli("export", run_id, out, *force, "--tracking-uri", uri))
            assert line == (f"Error: {out}: {'is' if out == '.' else 'holds'} the working directory ({here}); an export "
                            "never replaces it: choose another OUT")
    # OUT below a regular file: one line (it was a traceback), nothing created.
    (tmp_path / "a-file").write_text("x")
    line = error_line(cli("export", run_id, tmp_path / "a-file" / "sub" / "out", "--tracking-uri", uri))
    assert line == f"Error: {tmp_path / 'a-file' / 'sub' / 'out'}: {tmp_path / 'a-file'} is a file, not a directory; choose another OUT"
    assert (tmp_path / "a-file").read_text() == "x"


# -- 2. a checkpoint is written whole or not at all ----------------------------------------------------

# A real process writes three checkpoints into a run and is killed (SIGKILL: nothing can be caught) at
# one point of the third write, through the writer's hook.
WRITER = """
import os, signal, sys
import numpy as np
from vaekit import checkpoint

uri, run_id, point = sys.argv[1:]
def arrays(epoch):
    return {"m0": np.full((64, 64), epoch, np.float32), "m1": np.arange(epoch), "o0": np.array(epoch)}
checkpoint.write(arrays(1), 1, {"loss": 1.0}, run_id, uri)
checkpoint.write(arrays(2), 2, {"loss": 2.0}, run_id, uri)
def stop(reached, slot):
    if reached == point:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.on_write = stop
checkpoint.write(arrays(3), 3, {"loss": 3.0}, run_id, uri)
print("not killed")
"""


def test_a_checkpoint_write_killed_at_any_point_leaves_the_previous_one_to_resume_from(store, tmp_path):
    """``kill -9`` between ``state.npz`` and ``state.json`` left a run that could not be resumed at all ("does
    not match ... start it again"), its previous good checkpoint overwritten.  Writes now take two slots in turn:
    the newest checkpoint is never the one being written."""
    import subprocess
    import sys

    import numpy as np
    from mlflow.tracking import MlflowClient

    from vaekit import checkpoint, tracking

    experiment = tracking.check_store(store, "checkpoints")
    client = MlflowClient(store)
    for point in checkpoint.WRITE_POINTS:
        run_id = client.create_run(experiment).info.run_id
        proc = subprocess.run([sys.executable, "-c", WRITER, store, run_id, point], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
        whole = point == checkpoint.META_FILE  # killed once state.json is written: the new one is complete
        ckpt = checkpoint.load(run_id, store)
        expected = 3 if whole else 2
        assert (ckpt.epoch, ckpt.logs) == (expected, {"loss": float(expected)}), point
        np.testing.assert_array_equal(ckpt.model_arrays[0], np.full((64, 64), expected, np.float32))
        np.testing.assert_array_equal(ckpt.model_arrays[1], np.arange(expected))
        # The next write (the resumed run's) goes on from there, again never over the newest one.
        checkpoint.write({"m0": np.zeros(2), "o0": np.array(9)}, 9, {}, run_id, store)
        assert checkpoint.load(run_id, store).epoch == 9
    slots = {a.path for a in client.list_artifacts(run_id, checkpoint.ARTIFACT_DIR)}
    assert slots == {"checkpoints/slot0", "checkpoints/slot1"}, slots  # two, however many writes


# -- 3. names of what is logged into a run are unique across calls and processes -----------------------

def test_what_is_logged_into_a_run_never_replaces_what_another_call_or_server_logged(trained, notebook_data, tmp_path,
                                                                                     monkeypatch):
    """``reconstruct --log`` logged every call into the same ``generated/reconstruct/`` (the second call's figure
    replaced the first's) and names that sanitise alike (``a b``/``a_b``, ``é``/``è``) replaced each other; two
    ``vaekit explore`` servers on one run kept under the same ``keep_…_001`` name."""
    import time

    import mlflow
    import soundfile as sf

    from conftest import make_tones
    from vaekit.audio import AudioParams
    from vaekit.commands.explore import load_explorer
    from vaekit.commands.generate import reconstruct

    run_id, uri, _ = trained
    client = mlflow.MlflowClient(uri)

    def logged(path="generated"):
        out = []
        for f in client.list_artifacts(run_id, path):
            out += logged(f.path) if f.is_dir else [f.path]
        return out

    takes = tmp_path / "takes"
    takes.mkdir()
    names = ["a b.wav", "a_b.wav", "é.wav", "è.wav"]
    for i, name in enumerate(names):
        sf.write(takes / name, make_tones(1, AudioParams(), seed=i)[0], 22050)
    calls = [reconstruct(run_id, [takes], options=["vocoder.n_iter=1"], out=tmp_path / f"out{n}", log=True,
                         tracking_uri=uri) for n in (1, 2)]
    for call in calls:
        assert len([a for a in call.artifacts if a.endswith(".wav")]) == len(names)  # none replaced another
        assert len(set(call.artifacts)) == len(call.artifacts) == len(names) + 1  # and one figure
    assert not set(calls[0].artifacts) & set(calls[1].artifacts)
    assert sorted(logged()) == sorted(calls[0].artifacts + calls[1].artifacts)

    # Two servers on the run (two explorers, as two processes hold them), keeping at the same second.
    servers = [load_explorer(run_id, data=notebook_data, tracking_uri=uri) for _ in range(2)]
    same_second = time.gmtime()
    monkeypatch.setattr(time, "gmtime", lambda *args: same_second)
    kept = [server.keep({"z": [0.5] * LATENT})["artifacts"] for server in servers]
    monkeypatch.undo()
    assert len({path for paths in kept for path in paths}) == 4, kept
    assert sorted(logged("generated/explore")) == sorted(path for paths in kept for path in paths)


# -- 6. names that clash ----------------------------------------------------------------------------

def test_register_refuses_names_that_clash_or_that_models_uris_cannot_carry(trained):
    import mlflow

    run_id, uri, _ = trained
    client = mlflow.MlflowClient(uri)
    ok = cli("register", run_id, "tones", "--tracking-uri", uri)
    assert ok.exit_code == 0, ok.output
    client.create_registered_model("mine")  # someone's own model, made outside vaekit
    for name, message in (
            ("tones-generator", "NAME 'tones-generator': ends in -generator, the name vaekit gives the generator of NAME "
                                "'tones'; choose a name without it"),
            ("x@y", "NAME 'x@y': letters, digits, _, - and . only (at most 200, not starting with - or .), so that "
                    "models:/NAME/VERSION names it"),
            ("a\nb", "NAME 'a\\nb': letters, digits, _, - and . only (at most 200, not starting with - or .), so that "
                     "models:/NAME/VERSION names it"),
            ("mine", "registered model 'mine' holds models vaekit did not register, not VAEs; choose another NAME")):
        assert error_line(cli("register", run_id, name, "--tracking-uri", uri)) == f"Error: {message}"
    names = sorted(m.name for m in client.search_registered_models())
    assert names == ["mine", "tones", "tones-generator"]  # nothing registered by a refused name
    assert [int(v.version) for v in client.search_model_versions("name = 'tones-generator'")] == [1]  # no VAE in it
    assert client.search_model_versions("name = 'mine'") == []
    again = cli("register", run_id, "tones", "--tracking-uri", uri)  # the same name again: a second version of each
    assert again.output.splitlines() == ["VAE:       models:/tones/2", "generator: models:/tones-generator/2"]


METRIC_PLUGIN = '''
import vaekit

def build(key="peak"):
    def metric(original, reconstructed, sampled, audio, vocoded):
        return {key: float(abs(original).max())}
    return metric

@vaekit.hookimpl
def register_metrics(register):
    register("named", build)
'''


@pytest.mark.parametrize("key, problem", [
    ("test_mse", "the run logs a metric of that name itself; a metric must not replace it"),
    ("test_recon_mel_db", "the run logs a metric of that name itself; a metric must not replace it"),
    ("bad!name", "MLflow takes metric names of 1 to 250 letters, digits, _, -, ., space, / and : only"),
    ("a/../b", "MLflow refuses names that read as another path ('b')"),
])
def test_a_metric_plugin_cannot_replace_the_runs_metrics_nor_return_names_mlflow_refuses(key, problem, notebook_data,
                                                                                        store, tmp_path):
    """A plugin returning ``test_mse`` replaced the run's ``test_mse`` without a word; ``bad!name`` passed the
    pre-flight and failed after training with a traceback.  Both are one line before any run exists."""
    from conftest import runs_in

    plugin = tmp_path / "named_metric.py"
    plugin.write_text(METRIC_PLUGIN)
    result = cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, "--epochs", 1,
                 "--encoder", "dense", "--decoder", "dense", "--samples", 0, "--metrics", "test_recon_mel_db,named",
                 "--option", f"metrics.key={key}")
    line = error_line(result)
    assert line == (f"Error: metric 'named' (from {plugin.resolve()}) returns {key!r}: {problem} (pre-flight check on "
                    "16 test clips, before training)"), line
    assert runs_in(store) == []


# -- 7. a WAV header's sample rate --------------------------------------------------------------------

def test_a_wav_header_claiming_a_huge_sample_rate_is_one_line_not_a_resampling(trained, tmp_path):
    """``reconstruct`` trusted the header: a file claiming 1 GHz was resampled from that rate (the issue saw
    over 4 GB).  Rates outside 1 kHz–768 kHz are refused by the reader ``prepare`` and ``reconstruct`` share."""
    import struct

    import soundfile as sf

    from conftest import make_tones
    from vaekit.audio import AudioParams

    run_id, uri, _ = trained
    wav = tmp_path / "ghz.wav"
    sf.write(wav, make_tones(1, AudioParams())[0], 22050, subtype="PCM_16")
    header = bytearray(wav.read_bytes())
    header[24:32] = struct.pack("<II", 1_000_000_000, 2_000_000_000)  # sample rate, byte rate
    wav.write_bytes(bytes(header))
    line = error_line(cli("reconstruct", run_id, wav, "--tracking-uri", uri))
    assert line == f"Error: {wav}: sample rate 1000000000 Hz in its header, outside 1000–768000 Hz (a damaged file?)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ghz.wav"]  # nothing written beside it


# -- 7. the served generator: bounded z, bounded time ------------------------------------------------------

def test_the_served_generator_refuses_far_z_and_stops_a_request_past_its_time(trained, monkeypatch):
    """``z = [-10, 0, …]`` got a 504 while the server's worker burned a core for minutes; a finite large z got a
    generic vocoder error.  A far z is now refused by name; a request is stopped at 90 % of the server's timeout
    (``mlflow models serve`` sets MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT), in the worker thread as the server runs
    it, and the thread stops working."""
    import threading
    import time

    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException

    run_id, uri, _ = trained
    mlflow.set_tracking_uri(uri)
    generator = mlflow.pyfunc.load_model(mlflow.MlflowClient(uri).get_run(run_id).data.tags["vaekit.generator_uri"])
    with pytest.raises(MlflowException) as info:
        generator.predict({"z": [[0.0] * LATENT, [0.0, 1e6, 0.0, 0.0]]})
    assert info.value.message == "z: row 1 holds 1e+06, beyond ±1000 (the prior is N(0, I))"
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"

    # A z that decodes to a noise-like spectrogram: the run's Griffin-Lim spends minutes of CPU on its NNLS
    # (151 CPU-s measured for one clip).  The decoder is made to give one; vocoder and all else are the run's.
    impl = generator.unwrap_python_model()
    noise = np.random.default_rng(0).uniform(size=(1, 50, 50, 1)).astype(np.float32)
    monkeypatch.setattr(impl, "decoder", lambda z, training=False: np.repeat(noise, len(z), axis=0))
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "4")
    answer = {}

    def worker():  # as the scoring server runs predict: in a thread of its own (asyncio.to_thread)
        try:
            answer["ok"] = generator.predict({"z": [[0.0] * LATENT]})
        except MlflowException as exc:
            answer["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)  # should it not stop, it must not hold the test process
    start = time.monotonic()
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the request was not stopped"
    assert time.monotonic() - start < 20
    assert answer["error"].message == (
        "z: stopped after 3.6 s, at rows 0-0 of 1 (the server's request timeout is 4 s): the vocoder takes long on what "
        "they decode to; send fewer rows, or z nearer the prior N(0, I)")
    assert answer["error"].error_code == "INVALID_PARAMETER_VALUE"
    cpu = time.process_time()
    time.sleep(2)
    assert time.process_time() - cpu < 0.5  # nothing left burning a core


# -- 8. explore: 4xx for what a client sends, and no traceback on the console -----------------------------

def test_explore_answers_hostile_requests_in_4xx_and_its_console_shows_no_traceback(trained, tmp_path):
    """An integer too large for a float in z, deeply nested JSON, a non-ASCII digit as a clip index were 500s;
    unknown keys in a body were ignored; each 500, each client that left mid-request and a Ctrl-C with a request
    in flight printed a traceback on the server's console.  A real ``vaekit explore`` process."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import mlflow
    from test_explore import request

    from conftest import free_port, stop_process_group

    run_id, uri, _ = trained
    port = free_port()
    base, zeros = f"http://127.0.0.1:{port}", [0.0] * LATENT
    err = open(tmp_path / "stderr", "w+")
    # SIGINT as a terminal's Ctrl-C sends it, even when pytest runs as a background job (which ignores it).
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", run_id, "--tracking-uri", uri, "--port", str(port)],
                            cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.PIPE,
                            stderr=err, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    kept_before = mlflow.MlflowClient(uri).list_artifacts(run_id, "generated/explore")
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("open "):  # printed just before the server accepts
            line = proc.stdout.readline()
        assert line, f"vaekit explore ended: {(tmp_path / 'stderr').read_text()[-2000:]}"
        wait_until_answered(proc, f"{base}/api/info", tmp_path / "stderr", 60, "vaekit explore", every=0.1)
        for method, path, raw, status, message in (
                ("POST", "/api/decode", b'{"z": [1' + b"0" * 400 + b', 0, 0, 0]}', 400,
                 "z[0]: must be within ±1000, got an integer of 401 digits"),
                ("POST", "/api/decode", b'{"z": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
                 "request body: JSON nested too deeply"),
                ("GET", "/api/clip/%C2%B2", None, 400, "index '²': expected a non-negative integer"),
                ("GET", "/api/clip/%D9%A3", None, 400, "index '٣': expected a non-negative integer"),
                ("POST", "/api/decode", json.dumps({"z": zeros, "seed": 1}).encode(), 400,
                 f'expected {{"z": [{LATENT} numbers]}}; got unknown key "seed"'),
                ("POST", "/api/interpolate", json.dumps({"a": 0, "b": 1, "steps": 2, "stpes": 4}).encode(), 400,
                 'expected {"a": INDEX, "b": INDEX} or {"z_a": [...], "z_b": [...]}, and optionally "steps"; got unknown '
                 'key "stpes"'),
                ("POST", "/api/keep", json.dumps({"clip": 0, "part": "original", "name": "../x"}).encode(), 400,
                 'expected a decode body, an interpolate body, or {"clip": INDEX, "part": "original"}; got unknown key '
                 '"name"')):
            got, kind, answer = request(base + path, method=method, raw=raw)
            assert (got, kind, json.loads(answer)) == (status, "application/json", {"error": message}), (path, answer[:300])
        after = mlflow.MlflowClient(uri).list_artifacts(run_id, "generated/explore")
        assert [f.path for f in after] == [f.path for f in kept_before]  # the refused keep kept nothing

        port = int(base.rsplit(":", 1)[1])
        head = (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{\"z\": [")
        with socket.create_connection(("127.0.0.1", port)) as gone:  # a client that leaves mid-body
            gone.sendall(head)
        time.sleep(0.5)
        assert request(f"{base}/api/info")[0] == 200  # still serving
        with socket.create_connection(("127.0.0.1", port)) as waiting:  # a request in flight at Ctrl-C
            waiting.sendall(head)
            time.sleep(0.5)
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
            assert waiting.recv(100).startswith(b"HTTP/1.1 503 ")  # answered, not dropped
    finally:
        stop_process_group(proc)
        err.close()
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130 and err.endswith("Interrupted.\n"), err[-3000:]
    assert "Traceback" not in err and "ERROR" not in err, err[-3000:]


# -- 9, 10. the logged VAE as MLflow's users call it --------------------------------------------------------

def vae_uri(trained) -> str:
    import mlflow

    run_id, uri, _ = trained
    return mlflow.MlflowClient(uri).get_run(run_id).data.tags["vaekit.model_uri"]


def test_the_logged_vae_predicts_through_pyfunc_and_keeps_its_keras_flavour_and_input_example(trained, notebook_data):
    """``mlflow.pyfunc.load_model(vaekit.model_uri).predict(x)`` failed (``Missing data for input "input_layer"``: the
    signature names its input ``mel``); the input example could not be logged (mlflow#16183)."""
    import json

    import mlflow
    import numpy as np

    from vaekit.logged import open_run

    run_id, uri, _ = trained
    mlflow.set_tracking_uri(uri)
    model_uri = vae_uri(trained)
    x = np.load(notebook_data / "x_test.npy")[:3, ..., None].astype(np.float32)
    vae = open_run(run_id, uri).model  # the Keras flavour, as vaekit loads it (mlflow.keras.load_model)
    expected = vae.decode(vae.encode(x)[0])  # the reconstruction from z = μ
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_allclose(pyfunc.predict(x), expected, atol=1e-5)
    np.testing.assert_allclose(pyfunc.predict({"mel": x}), expected, atol=1e-5)

    info = mlflow.models.get_model_info(model_uri)
    assert set(info.flavors) == {"keras", "python_function"}
    assert info.flavors["python_function"]["loader_module"] == "vaekit.serving"
    assert (info.signature.inputs.inputs[0].shape, info.signature.inputs.inputs[0].name) == ((-1, 50, 50, 1), "mel")
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    model = mlflow.models.Model.load(str(local))
    example = model.load_input_example(str(local))  # named as the signature names its input
    np.testing.assert_array_equal(example["mel"], x[:2])  # the first test spectrograms
    # The serving example (what `mlflow models serve` is posted in the next test): the same spectrograms.
    serving = json.loads((local / "serving_input_example.json").read_text())
    np.testing.assert_allclose(np.asarray(serving["inputs"], dtype=np.float32), x[:2], atol=1e-7)


def test_mlflow_models_serve_serves_the_logged_vae(trained, notebook_data, tmp_path):
    """A real ``mlflow models serve`` on the VAE's ``models:/`` URI, posted its own serving input example."""
    import json

    import mlflow
    import numpy as np
    from test_serving import post

    from conftest import models_serve

    run_id, uri, _ = trained
    model_uri = vae_uri(trained)
    serving = (Path(mlflow.artifacts.download_artifacts(model_uri, tracking_uri=uri)) / "serving_input_example.json").read_text()
    with models_serve(model_uri, uri, tmp_path) as base:
        status, body = post(f"{base}/invocations", serving)
        assert status == 200, body
        got = np.asarray(body["predictions"], dtype=np.float32)
        status, refused = post(f"{base}/invocations", json.dumps({"inputs": [[[0.5] * 49] * 50]}))
    from vaekit.logged import open_run

    vae = open_run(run_id, uri).model
    x = np.load(notebook_data / "x_test.npy")[:2, ..., None].astype(np.float32)
    np.testing.assert_allclose(got, vae.decode(vae.encode(x)[0]), atol=1e-4)
    assert status == 400 and refused["error_code"] == "INVALID_PARAMETER_VALUE", refused


# -- 11. a vaekit run's page in the MLflow UI: the model-training layout ---------------------------------------

def test_vaekit_ui_opens_a_runs_page_in_mlflows_model_training_layout_in_chromium(trained, tmp_path):
    """A run's page opened from a link showed MLflow's GenAI layout (traces, sessions, judges).  MLflow 3.17's UI
    picks its layout by its own switch, kept in the browser and GenAI by default, not by the experiment's
    ``mlflow.experimentKind`` tag (vaekit sets it too); ``vaekit ui`` makes model training the default of a
    browser that has not chosen, and a browser's own choice is kept."""
    import os
    import subprocess
    import sys

    import mlflow

    from conftest import chromium_browser, free_port, stop_process_group

    run_id, uri, where = trained
    run = mlflow.MlflowClient(uri).get_run(run_id)
    experiment = mlflow.MlflowClient(uri).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    port = free_port()
    log = open(tmp_path / "ui.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "ui", str(where), "--port", str(port)], cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    page_url = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    try:
        wait_until_answered(proc, f"{base}/health", tmp_path / "ui.log")
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})  # a fresh browser: nothing chosen

            def sidebar() -> str:
                page.wait_for_selector(f"text={run.info.run_name}", timeout=60_000)
                return page.locator("aside").first.inner_text()

            page.goto(page_url)
            menu = sidebar()
            assert "Model registry" in menu and "Judges" not in menu and "Sessions" not in menu, menu
            page.screenshot(path=str(tmp_path / "run-page.png"))
            # The user's own choice (the GenAI side of MLflow's switch) is kept.
            page.evaluate("() => localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('genai'))")
            page.reload()
            assert "Judges" in sidebar()
    finally:
        stop_process_group(proc)
        log.close()
