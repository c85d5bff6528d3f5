"""``vaekit explore``: the command, its JSON API and its page in a real headless Chromium.

One tiny conv2 run (module-scoped) is served by a real ``vaekit explore`` process for the whole
module; a plugin model (tests/explore_plugin.py) is served in-process by the same app.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG, chromium_browser, error_line, free_port, restore_sigint, stop_process_group, tiny_run, wall_limit

HERE = Path(__file__).resolve().parent
N_TEST = 32  # conftest's notebook data
NAMES = [f"spk{i % 4}/{i % 10}_{i % 4}_{i:02d}.wav" for i in range(N_TEST)]
SR, SAMPLES = 22050, 22050  # the notebook's audio parameters: 1 s at 22050 Hz


def request(url: str, body=None, method=None, raw: bytes | None = None, timeout: float = 60, headers=None):
    """(status, content type, bytes) of one HTTP request; 4xx/5xx answers are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def data_dir(notebook_data, tmp_path_factory) -> Path:
    """conftest's tiny data with a dataset.json naming the test clips SPEAKER/DIGIT_SPEAKER_N.wav."""
    target = tmp_path_factory.mktemp("explore-data") / "nb"
    shutil.copytree(notebook_data, target)
    (target / "dataset.json").write_text(json.dumps({"test_files": NAMES}))
    return target


def train(data: Path, where: Path, **overrides) -> tuple[str, str]:
    """One finished tiny run, no samples, in a store in ``where``: (run_id, tracking URI)."""
    return tiny_run(data, where, samples=0, **overrides)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> tuple[str, str, Path]:
    """A finished one-epoch conv2 run: (run_id, tracking URI, the store's folder)."""
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    where = tmp_path_factory.mktemp("store")
    return (*train(data_dir, where), where)


@pytest.fixture(scope="module")
def logged_run(trained):
    """The module's run as the test process loads it itself (vaekit.logged.open_run): what the server's answers are checked against."""
    from vaekit.logged import open_run

    return open_run(*trained[:2])


class Server:
    """A real ``vaekit explore REF`` process, started at once; :meth:`ready` waits for its page."""

    def __init__(self, ref: str, uri: str, where: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.where = where
        self.out, self.err = open(where / "stdout", "w+"), open(where / "stderr", "w+")
        cmd = [sys.executable, "-m", "vaekit", "explore", ref, "--tracking-uri", uri, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=where, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=self.out,
                                     stderr=self.err, start_new_session=True, preexec_fn=restore_sigint)
        self.stdout = None

    def ready(self) -> Server:
        deadline = time.monotonic() + HANG
        while self.stdout is None:
            text = (self.where / "stdout").read_text()
            if self.proc.poll() is not None:
                pytest.fail(f"vaekit explore exited with {self.proc.returncode}: {(self.where / 'stderr').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"vaekit explore did not answer within {HANG} s")
            if f"open {self.base}/" in text:  # printed just before uvicorn starts accepting
                try:
                    request(f"{self.base}/api/info", timeout=5)
                    self.stdout = text
                except OSError:
                    pass
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.out.close()
        self.err.close()


@pytest.fixture(scope="module")
def started(trained, tmp_path_factory):
    """The module's explore server, starting (tests that need no page yet can run while it loads).

    It is given the run's logged model as a ``models:/MODEL_ID`` URI, as the listening commands take it
    (the plugin-model test gives a run id)."""
    import mlflow

    from vaekit.registry import model_uri

    run_id, uri, _ = trained
    client = mlflow.MlflowClient(uri)
    ref = model_uri(client, client.get_run(run_id))
    assert ref.startswith("models:/m-"), ref
    server = Server(ref, uri, tmp_path_factory.mktemp("explore-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(started):
    """The module's explore server once it serves: (base URL, process, its stdout)."""
    started.ready()
    return started.base, started.proc, started.stdout


@contextmanager
def served(app):
    """``app`` on a real uvicorn server in a thread, on a free port: its base URL."""
    import uvicorn

    from vaekit.commands.explore import listen_socket

    sock = listen_socket("127.0.0.1", free_port())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wav_of(base: str, path: str, body=None) -> np.ndarray:
    """The samples of a WAV the API answers (checking it is one), as floats."""
    status, kind, data = request(base + path, body)
    assert (status, kind) == (200, "audio/wav"), (path, status, data[:200])
    sr, samples = read_wav(data)
    assert sr == SR
    return samples.astype(np.float64)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """The RMS difference of two waveforms relative to the RMS of ``b``: 0 for the same sound."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-9))


def nearer(x: np.ndarray, own: np.ndarray, other: np.ndarray) -> bool:
    """Whether ``x`` is the sound ``own`` and not ``other``: ten times nearer to ``own`` than ``other`` is.

    A relative test: one epoch leaves a tiny model's sounds close together (clips' reconstructions differ by
    1-6 %), while the same z decoded in a batch of one or of three differs by about 0.02 %."""
    return distance(x, own) < distance(own, other) / 10


def check_sounds(base: str, ends: tuple) -> None:
    """What the sounds are, not only that they are WAVs: different z decode to different sounds; a 3-step walk
    between ``ends`` starts and ends at their sounds and passes the midpoint; where ``ends`` are two clip
    indices, the second clip's μ decodes to its reconstruction."""
    if isinstance(ends[0], int):
        body = {"a": ends[0], "b": ends[1], "steps": 3}
        z_a, z_b = (json.loads(request(f"{base}/api/clip/{i}")[2])["z"] for i in ends)
        sounds = [wav_of(base, f"/api/clip/{i}/reconstruction.wav") for i in ends]
        assert nearer(wav_of(base, "/api/decode", {"z": z_b}), sounds[1], sounds[0])  # μ decodes to the reconstruction
    else:
        (z_a, z_b), body = ends, {"z_a": ends[0], "z_b": ends[1], "steps": 3}
        sounds = [wav_of(base, "/api/decode", {"z": e}) for e in ends]
    far = [wav_of(base, "/api/decode", {"z": [sign * 3.0] * len(z_a)}) for sign in (1, -1)]
    assert distance(far[0], far[1]) > 0.1
    walk = wav_of(base, "/api/interpolate", body)
    gap = round(0.15 * SR)
    assert len(walk) == 3 * SAMPLES + 2 * gap
    steps = [walk[k * (SAMPLES + gap):k * (SAMPLES + gap) + SAMPLES] for k in range(3)]
    assert not walk[SAMPLES:SAMPLES + gap].any() and not walk[2 * SAMPLES + gap:2 * (SAMPLES + gap)].any()  # silent gaps
    assert nearer(steps[0], sounds[0], sounds[1]) and nearer(steps[2], sounds[1], sounds[0])
    middle = wav_of(base, "/api/decode", {"z": [(a + b) / 2 for a, b in zip(z_a, z_b)]})
    assert nearer(steps[1], middle, sounds[0]) and nearer(steps[1], middle, sounds[1])  # the straight walk


def test_a_plugin_model_explores_like_a_built_in(data_dir, trained, started):
    """Served in-process by the same app; trained in the conv2 run's store while the module's server loads."""
    from vaekit.commands.explore import create_app, load_explorer
    from vaekit.plugins import load_plugin_file

    load_plugin_file(HERE / "explore_plugin.py")
    run_id, uri = train(data_dir, trained[2], encoder="mini", decoder="mini", latent_dim=3, vocoder="fastgl")
    explorer = load_explorer(run_id, tracking_uri=uri)
    assert "Gain" in {type(layer).__name__ for layer in explorer.run.model.encoder.layers}  # the plugin's, loaded back
    with served(create_app(explorer)) as base:
        points = json.loads(request(f"{base}/api/points")[2])["points"]
        assert len(points) == N_TEST
        status, kind, body = request(f"{base}/api/decode", {"z": [0.5, -1.0, 2.0]})
        assert (status, kind) == (200, "audio/wav") and len(read_wav(body)[1]) == SAMPLES
        assert request(f"{base}/api/decode", {"z": [0.0] * 20})[0] == 400
        assert request(f"{base}/api/clip/3/reconstruction.wav")[1] == "audio/wav"
        clip = json.loads(request(f"{base}/api/clip/3")[2])
        assert distance(wav_of(base, "/api/decode", {"z": clip["z"]}), wav_of(base, "/api/clip/3/reconstruction.wav")) < 1e-3
        # One epoch leaves this small model's μ nearly the same for every clip: the walk goes between two z.
        check_sounds(base, ends=([2.0, -1.0, 2.0], [-2.0, 1.0, -2.0]))


def test_the_map_has_every_test_clip_labelled_by_speaker_from_dataset_json(server, trained, logged_run, data_dir):
    base, _, stdout = server
    assert "vocoder fastgl" in stdout  # the run's griffinlim, played by its batched stand-in
    status, kind, body = request(f"{base}/api/points")
    assert status == 200 and kind == "application/json"
    points = json.loads(body)
    assert points["label_kind"] == "speaker"
    assert points["label_kinds"] == ["speaker", "name field", "reconstruction error"]
    got = points["points"]
    assert [p["index"] for p in got] == list(range(N_TEST))
    assert [p["name"] for p in got] == NAMES
    assert [p["label"] for p in got] == [f"spk{i % 4}" for i in range(N_TEST)]
    assert [p["labels"]["name field"] for p in got] == [str(i % 10) for i in range(N_TEST)]
    xy = np.array([[p["x"], p["y"]] for p in got])
    assert np.isfinite(xy).all() and xy.std(axis=0).min() > 0  # a spread map, not one spot
    info = json.loads(request(f"{base}/api/info")[2])
    assert (info["latent_dim"], info["sample_rate"], info["points"], info["vocoder"]) == (20, SR, N_TEST, "fastgl")
    assert info["run_id"] == trained[0]  # the models:/ URI the server was given, resolved to its run
    directions = np.array(info["pcs"]["directions"])
    np.testing.assert_allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-4)

    # The map is μ on its first two principal directions: μ from the logged model, its PCA by eigendecomposition.
    mu = np.asarray(logged_run.model.encode(np.load(data_dir / "x_test.npy")[..., None])[0], dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(mu, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:len(directions)]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order].T
    np.testing.assert_allclose(info["pcs"]["mean"], mu.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(directions[:2] * eigenvectors[:2], axis=1)), 1.0, atol=1e-3)
    np.testing.assert_allclose(info["pcs"]["variance_share"], eigenvalues / np.trace(np.cov(mu, rowvar=False)), rtol=1e-3)
    np.testing.assert_allclose(info["pcs"]["std"], np.sqrt(eigenvalues), rtol=1e-3)
    np.testing.assert_allclose(xy, (mu - mu.mean(axis=0)) @ directions[:2].T, atol=1e-3)


def test_clip_decode_interpolate_and_keep(server, trained):
    import mlflow

    base, _, _ = server
    clip = json.loads(request(f"{base}/api/clip/5")[2])
    assert clip["name"] == NAMES[5] and len(clip["z"]) == 20
    for part in ("original", "reconstruction"):
        assert np.array(clip["spectrogram"][part]).shape == (50, 50)
        status, kind, body = request(base + clip["wav"][part])
        assert (status, kind) == (200, "audio/wav")
        sr, samples = read_wav(body)
        assert sr == SR and len(samples) == SAMPLES and np.abs(samples).max() > 0
    status, kind, body = request(f"{base}/api/decode", {"z": clip["z"]})
    assert (status, kind) == (200, "audio/wav") and len(read_wav(body)[1]) == SAMPLES
    status, kind, body = request(f"{base}/api/interpolate", {"a": 0, "b": 5, "steps": 3})
    assert (status, kind) == (200, "audio/wav")
    assert len(read_wav(body)[1]) == 3 * SAMPLES + 2 * round(0.15 * SR)  # three steps, two gaps
    x = [p["x"] for p in json.loads(request(f"{base}/api/points")[2])["points"]]
    check_sounds(base, ends=(int(np.argmin(x)), int(np.argmax(x))))  # the clips farthest apart along PC1
    kept = json.loads(request(f"{base}/api/keep", {"a": 0, "b": 5, "steps": 3})[2])
    wav_path, json_path = kept["artifacts"]
    assert re.fullmatch(r"generated/explore/keep_\d{8}-\d{6}-[0-9a-f]{12}\.wav", wav_path), wav_path
    run_id, uri, _ = trained
    client = mlflow.MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(run_id, "generated/explore")} == {wav_path, json_path}
    assert client.get_run(run_id).info.status == "FINISHED"  # logging into the run leaves it as it was


BAD_REQUESTS = [
    # (method, path, JSON body or raw bytes, status, words the one-line error holds)
    ("POST", "/api/decode", {"z": [0.0] * 3}, 400, "z: expected 20 numbers (the run's latent_dim), got 3"),
    ("POST", "/api/decode", b'{"z": [NaN' + b", 0" * 19 + b"]}", 400, "z[0]: must be finite"),
    ("POST", "/api/decode", {"z": [0] * 19 + ["1"]}, 400, "z[19]: expected a number"),
    ("POST", "/api/decode", {"z": [0] * 19 + [1e9]}, 400, "z[19]: must be within"),
    ("POST", "/api/decode", {"z": 3}, 400, "z: expected a list of 20 numbers"),
    ("POST", "/api/decode", b'{"z": [1,', 400, "request body: not valid JSON"),
    ("POST", "/api/decode", b"[1, 2]", 400, "request body: expected a JSON object"),
    ("POST", "/api/decode", {"path": "/etc/passwd"}, 400, 'expected {"z": [20 numbers]}'),
    ("POST", "/api/decode", {"z": [0] * 20, "label": "seven"}, 400, "label: this run is unconditional"),
    ("POST", "/api/interpolate", {"z_a": [0] * 20, "z_b": [0] * 20, "label_a": "a", "label_b": "b"}, 400,
     "label_a: this run is unconditional"),
    ("POST", "/api/interpolate", {"a": 0, "b": 1, "label_a": "a"}, 400, 'expected {"a": INDEX, "b": INDEX}'),
    ("POST", "/api/decode", b"{" + b" " * 300_000 + b"}", 413, "larger than"),
    ("GET", "/api/decode", None, 405, "method GET not allowed"),
    ("GET", "/api/clip/32", None, 404, "index 32: no such clip on the map"),
    ("GET", "/api/clip/-1", None, 400, "index '-1': expected a non-negative integer"),
    ("GET", "/api/clip/1/spectrogram.wav", None, 404, "spectrogram.wav: expected one of original.wav"),
    ("GET", "/api/clip/1/..%2F..%2Fexplore.py", None, 404, "no such page or API endpoint"),
    ("GET", "/static/..%2Fexplore.py", None, 404, "no such page or API endpoint"),
    ("POST", "/api/interpolate", {"a": 0, "b": 1, "steps": 100}, 400, "steps: expected an integer from 2 to 32"),
    ("POST", "/api/interpolate", {"a": 0, "b": 99}, 404, "index 99: no such clip"),
    ("POST", "/api/interpolate", {"a": 0, "z_b": [0] * 20}, 400, 'expected {"a": INDEX, "b": INDEX}'),
    ("POST", "/api/keep", {"clip": 0, "part": "../../x"}, 400, 'part "../../x": expected one of'),
    ("POST", "/api/keep", {"clip": True}, 400, "index: expected an integer"),
]


def test_bad_requests_are_4xx_with_a_one_line_json_error(server):
    base, proc, _ = server
    # What a page on another site could send through the user's browser: a "simple" cross-site POST
    # (text/plain, no CORS preflight), and any request after a DNS rebinding (its own name in Host).
    cross_site = [("POST", "/api/keep", {"z": [0] * 20}, 415, "Content-Type must be application/json, got text/plain",
                   {"Content-Type": "text/plain"}),
                  ("GET", "/api/points", None, 421, "Host 'evil.example:80': this server answers only",
                   {"Host": "evil.example:80"})]
    for method, path, body, status, words, *headers in [*BAD_REQUESTS, *cross_site]:
        raw = body if isinstance(body, bytes) else None
        got, kind, answer = request(base + path, None if raw else body, method=method, raw=raw,
                                    headers=headers[0] if headers else None)
        assert (got, kind) == (status, "application/json"), (path, body, got, answer[:200])
        error = json.loads(answer)["error"]
        assert words in error and "\n" not in error, (path, error)
    assert request(f"{base}/api/info")[0] == 200 and proc.poll() is None  # still serving


def test_a_taken_port_and_a_public_host_are_said_before_anything_loads(tmp_path):
    import socket

    from click.testing import CliRunner

    from vaekit.cli import main

    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["explore", "0123", "--port", str(port), "--tracking-uri", missing])
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in error_line(result)
    result = CliRunner().invoke(main, ["explore", "0123", "--host", "0.0.0.0", "--port", str(free_port()),
                                       "--tracking-uri", missing])
    assert "no such database" in error_line(result)
    assert result.stderr.startswith("warning: --host 0.0.0.0 makes the run's model and data reachable from other machines")


def test_the_page_in_chromium(server, tmp_path):
    """Map, click → original and reconstruction WAVs, slider → a newly decoded WAV, screenshot."""
    base, _, _ = server
    wav_head = ("async (id) => { const a = document.getElementById(id);"
                " const b = new Uint8Array(await (await fetch(a.src)).arrayBuffer());"
                " return [String.fromCharCode(...b.slice(0, 4)), String.fromCharCode(...b.slice(8, 12)), a.duration]; }")
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(f"{base}/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        marks = page.locator("#map circle.pt")
        assert marks.count() == N_TEST
        # Points a click reaches (the topmost at their centre; points may overlap), in test-set order.
        free = page.evaluate("() => [...document.querySelectorAll('#map circle.pt')].filter((c) => {"
                             " const r = c.getBoundingClientRect();"
                             " return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c;"
                             " }).map((c) => Number(c.dataset.index))")
        a, b, hover = free[0], free[1], free[-1]
        mark = lambda i: page.locator(f"#map circle.pt[data-index='{i}']")
        assert mark(a).locator("title").text_content() == NAMES[a]  # the hover name

        with page.expect_response(lambda r: r.url.endswith(f"/api/clip/{a}/original.wav")) as original:
            mark(a).click()
        assert original.value.headers["content-type"] == "audio/wav"
        for part in ("original", "reconstruction"):
            page.wait_for_function(f"document.getElementById('audio-{part}').readyState >= 1")
            riff, kind, seconds = page.evaluate(wav_head, f"audio-{part}")
            assert (riff, kind) == ("RIFF", "WAVE") and seconds == pytest.approx(1.0, abs=0.01)
        assert page.locator("#clip-name").text_content() == NAMES[a]

        mark(b).click(modifiers=["Shift"])  # the other end of an interpolation
        assert page.locator("#end-b").text_content() == NAMES[b]
        page.locator("#sliders input").first.focus()
        with page.expect_response(lambda r: r.url.endswith("/api/decode")) as decoded:
            page.keyboard.press("ArrowRight")
        assert decoded.value.status == 200 and decoded.value.headers["content-type"] == "audio/wav"
        page.wait_for_function("window.explore.decodes >= 1 && !window.explore.inFlight")
        page.wait_for_function("document.getElementById('audio-current').readyState >= 1")
        assert page.evaluate("document.getElementById('audio-current').src").startswith("blob:")
        riff, kind, seconds = page.evaluate(wav_head, "audio-current")
        assert (riff, kind) == ("RIFF", "WAVE") and seconds == pytest.approx(1.0, abs=0.01)
        assert page.evaluate("document.getElementById('download').href").startswith("blob:")

        mark(hover).hover()
        assert page.locator("#tooltip").text_content().startswith(NAMES[hover])
        shot = tmp_path / "explore.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
        assert errors == []


def keys_at_any_depth(value, skip=("labels",)) -> set[str]:
    """Every key of every JSON object in ``value`` (not those under ``skip``: their keys are data, e.g. label kinds)."""
    if isinstance(value, dict):
        return set(value) | {k for key, v in value.items() if key not in skip for k in keys_at_any_depth(v, skip)}
    if isinstance(value, list):
        return {k for v in value for k in keys_at_any_depth(v, skip)}
    return set()


def test_docs_explore_md_lists_the_api_the_server_has(server):
    """docs/explore.md's "The JSON API" table against the code and the server: the same endpoints and methods as
    the app's routes, every documented GET answered, and the keys each GET answer holds named in its row."""
    from conftest import docs_page
    from vaekit.commands.explore import Api

    base, _, _ = server
    table = docs_page("explore.md").split("## The JSON API", 1)[1].split("| request | answer |", 1)[1].split("\n\n", 1)[0]
    documented, answers = set(), {}
    for line in table.strip().splitlines()[1:]:  # after the |---| row
        request_cell, answer = line.strip().strip("|").split(" | ", 1)
        method = None
        for verb, path in re.findall(r"`(?:(GET|POST) )?(/api/[^`\s]*)`", request_cell):
            method = verb or method
            documented.add((method, re.sub(r"/(original|reconstruction)\.wav$", "/{part}", path.replace("INDEX", "{index}"))))
            answers[(method, path)] = answer
    # The app's own route table (Api.routes() needs no loaded run: it only names the handlers).
    routes = {(method, route.path) for route in Api.__new__(Api).routes() if route.path.startswith("/api/")
              for method in route.methods - {"HEAD"}}
    assert len(routes) >= 7 and documented == routes

    for (method, path), answer in answers.items():
        if method != "GET":
            continue
        status, kind, body = request(base + path.replace("INDEX", "0"))
        assert status == 200, (path, body[:200])
        if kind == "application/json":
            got = json.loads(body)
            # A row sketches the JSON ({"index", ...}) or lists its keys in backticks (`run_id`, ...).
            named = set(re.findall(r'"(\w+)"', answer)) if '{"' in answer else set(re.findall(r"`(\w+)`", answer))
            assert set(got) <= named, (path, set(got) - named)  # every key of the answer is documented
            assert named <= keys_at_any_depth(got), (path, named - keys_at_any_depth(got))  # and none that is not there


def test_labels_come_from_dataset_json_names_else_the_reconstruction_error():
    from vaekit.commands.explore import clip_labels, test_names

    errors = np.array([1.0, 2.5, 3.0, 0.5])
    assert clip_labels(None, errors) == ({"reconstruction error": [1.0, 2.5, 3.0, 0.5]}, "reconstruction error")
    audiomnist = ["0_01_0.wav", "7_01_3.wav", "0_02_1.wav", "7_02_9.wav"]  # flat: no speaker folders
    labels, kind = clip_labels(audiomnist, errors)
    assert (kind, labels["name field"], "speaker" in labels) == ("name field", ["0", "7", "0", "7"], False)
    synthetic = ["speaker00/clip00001", "speaker01/clip00002", "speaker00/clip00005", "speaker01/clip00006"]
    labels, kind = clip_labels(synthetic, errors)  # unique file names group nothing: no name field
    assert (kind, labels["speaker"], list(labels)) == ("speaker", ["speaker00", "speaker01"] * 2, ["speaker", "reconstruction error"])
    assert test_names({"test_files": ["a", "b"]}, 3) is None  # names only when one per test clip
    assert test_names({"test_files": ["a", "b", "c"]}, 3) == ["a", "b", "c"]


def test_ctrl_c_stops_the_server_at_once(server, started):
    """Last in this module: it stops the module's server (with a browser-like connection kept open)."""
    import socket

    base, proc, _ = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as kept_alive:
        kept_alive.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
        kept_alive.recv(100)
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - start  # measured while the connection is still open: the stop did not wait for it
    assert took < wall_limit(3), took  # nor for TensorFlow's teardown (0.8 s on an idle 2-core machine)
    assert proc.returncode == 130
    assert (started.where / "stderr").read_text().endswith("Interrupted.\n")
