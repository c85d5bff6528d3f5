"""A run's models outside vaekit's listening commands: models:/ URIs, the servable generator, the registry, export.

One tiny run (dense encoder and decoder) is shared by the module; one real ``mlflow models serve``
process serves its registered generator.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import HANG, error_line, models_serve, tiny_run

LATENT = 4


@pytest.fixture(scope="module")
def trained(notebook_data, tmp_path_factory):
    """One finished tiny run: (run_id, tracking URI)."""
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    small = {"units": 16, "layers": 1}
    return tiny_run(notebook_data, tmp_path_factory.mktemp("store"), encoder="dense", decoder="dense", latent_dim=LATENT,
                    samples=0, options={"encoder": small, "decoder": small, "vocoder": {"n_iter": 4}})


def cli(*args):
    from vaekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def registered(trained):
    """The run registered as ``tones`` / ``tones-generator`` with alias ``champion``: the CLI's output."""
    run_id, uri = trained
    result = cli("register", run_id, "tones", "--alias", "champion", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def logged(trained):
    """The run as vaekit's listening commands open it (a LoggedRun)."""
    from vaekit.logged import open_run

    return open_run(*trained)


def reference_waves(run, z):
    """What the run's decoder, denormalisation and vocoder (with its options) make of z, through vaekit's own path."""
    from vaekit.components import vocode
    from vaekit.logged import build_vocoders

    (comp, fn), = build_vocoders(run).values()
    return vocode(comp, fn, run.denormalize(run.model.decode(z)[..., 0])), run.audio


def decode_wavs(items):
    return [sf.read(io.BytesIO(base64.b64decode(item)), dtype="float32") for item in items]


def test_the_run_tags_both_logged_models_and_loads_the_vae_through_its_models_uri(trained):
    import mlflow

    from vaekit import registry
    from vaekit.logged import find_run, open_run

    run_id, uri = trained
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    tags = run.data.tags
    for key, name in (("vaekit.model_uri", "model"), ("vaekit.generator_uri", "generator")):
        assert tags[key].startswith("models:/m-")
        logged = client.get_logged_model(tags[key].removeprefix("models:/"))
        assert logged.source_run_id == run_id and logged.name == name and logged.status == "READY"
    assert registry.model_uri(client, run) == tags["vaekit.model_uri"]
    # A logged model's own URI stands for the run that logged it, as a registered version's does.
    assert find_run(tags["vaekit.generator_uri"], uri)[1].info.run_id == run_id
    z = np.random.default_rng(0).standard_normal((2, LATENT), dtype=np.float32)
    decoded = open_run(run_id, uri).model.decode(z)

    # A run logged before the tag existed: its logged model is found by searching; the same model loads.
    client.delete_tag(run_id, "vaekit.model_uri")
    try:
        assert registry.model_uri(client, client.get_run(run_id)) == tags["vaekit.model_uri"]
        np.testing.assert_array_equal(open_run(run_id, uri).model.decode(z), decoded)
    finally:
        client.set_tag(run_id, "vaekit.model_uri", tags["vaekit.model_uri"])


def test_generator_predicts_one_wav_per_row_as_vaekit_makes_it_and_refuses_bad_z(trained, logged):
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id, uri = trained
    mlflow.set_tracking_uri(uri)
    generator = mlflow.pyfunc.load_model(mlflow.MlflowClient(uri).get_run(run_id).data.tags["vaekit.generator_uri"])
    z = np.random.default_rng(1).standard_normal((3, LATENT))
    wavs = decode_wavs(generator.predict({"z": z.tolist()}))
    expected, audio = reference_waves(logged, z.astype(np.float32))
    assert len(wavs) == 3
    for (wave, sr), ref in zip(wavs, expected):
        assert sr == audio.sr and wave.shape == (audio.samples,) and np.abs(wave).max() > 0
        np.testing.assert_allclose(wave, ref, atol=1e-3)  # 16-bit PCM

    for bad, message in (({"z": [[0.0] * (LATENT - 1)]}, f"z: expected rows of {LATENT} numbers (shape (n, {LATENT})), got shape (1, 3)"),
                         ({"z": [[0.0] * (LATENT - 1) + [float("nan")]]}, "z: row 0 holds NaN or infinite values"),
                         ({"latents": [[0.0] * LATENT]}, f"inputs: expected one field 'z' (rows of {LATENT} numbers), got ['latents']")):
        with pytest.raises(MlflowException) as info:
            generator.predict(bad)
        assert info.value.message == message and info.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.fixture(scope="module")
def server(trained, registered, tmp_path_factory):
    """A real ``mlflow models serve`` of models:/tones-generator@champion on 127.0.0.1: its base URL."""
    _, uri = trained
    with models_serve("models:/tones-generator@champion", uri, tmp_path_factory.mktemp("serve"), wait=HANG) as base:
        yield base


def post(url: str, body: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mlflow_models_serve_answers_wavs_and_400_for_bad_z(logged, server):
    z = np.random.default_rng(2).standard_normal((2, LATENT))
    status, body = post(f"{server}/invocations", json.dumps({"inputs": {"z": z.tolist()}}))
    assert status == 200, body
    wavs = decode_wavs(body["predictions"])
    expected, audio = reference_waves(logged, z.astype(np.float32))
    assert [sr for _, sr in wavs] == [audio.sr] * 2
    for (wave, _), ref in zip(wavs, expected):
        np.testing.assert_allclose(wave, ref, atol=1e-3)

    # MLflow's server puts "Failed to predict data '…'." before the generator's own one-line reason.
    for body_text, reason in (
            (json.dumps({"inputs": {"z": [[0.0, 1.0]]}}), f"z: expected rows of {LATENT} numbers (shape (n, {LATENT})), got shape (1, 2)"),
            ('{"inputs": {"z": [[0.0, 1.0, NaN, 0.0]]}}', "z: row 0 holds NaN or infinite values"),
            (json.dumps({"inputs": {"z": [[0.0] * LATENT] * 257}}), "z: 257 rows, at most 256 a request")):
        status, answer = post(f"{server}/invocations", body_text)
        assert status == 400, answer
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert answer["message"].splitlines()[-1] == f"Error: {reason}"


def test_register_names_both_models_and_the_listening_commands_take_their_uris(trained, registered, tmp_path):
    import mlflow

    from vaekit.commands.generate import generate, interpolate

    run_id, uri = trained
    assert registered.splitlines() == ["VAE:       models:/tones/1  (models:/tones@champion)",
                                       "generator: models:/tones-generator/1  (models:/tones-generator@champion)"]
    client = mlflow.MlflowClient(uri)
    tags = client.get_run(run_id).data.tags
    for name, tag in (("tones", "vaekit.model_uri"), ("tones-generator", "vaekit.generator_uri")):
        version = client.get_model_version_by_alias(name, "champion")
        assert (str(version.version), version.run_id, version.source) == ("1", run_id, tags[tag])

    by_alias = generate("models:/tones@champion", n=1, out=tmp_path / "a", log=False, tracking_uri=uri)
    by_version = generate("models:/tones/1", n=1, out=tmp_path / "v", log=False, tracking_uri=uri)
    np.testing.assert_array_equal(sf.read(by_alias.files[0])[0], sf.read(by_version.files[0])[0])
    walk = interpolate("models:/tones-generator@champion", seeds=(0, 1), steps=2, out=tmp_path / "w", log=True,
                       tracking_uri=uri)
    assert walk.artifacts and {a.path for a in client.list_artifacts(run_id, "generated/interpolate_seeds_0_1")}

    for args, message in (
            (("generate", "models:/nosuch@champion"), f"Error: models:/nosuch@champion: no registered model 'nosuch' in {uri} "
                                                      "(vaekit register RUN_ID NAME registers one)"),
            (("generate", "models:/tones@staging"), "Error: models:/tones@staging: registered model 'tones' has no alias 'staging'"),
            (("generate", "models:/tones/7"), "Error: models:/tones/7: registered model 'tones' has no version 7"),
            (("generate", "models:/tones"), "Error: models:/tones: not a model URI vaekit reads; use models:/NAME/VERSION, "
                                            "models:/NAME@ALIAS or a run id"),
            (("register", run_id, "tones", "--alias", "v2"), "Error: --alias 'v2': letters, digits, _ and - only, and not "
                                                             "'latest' or v<number> (MLflow reserves those)")):
        assert error_line(cli(*args, "--tracking-uri", uri)) == message
    assert len(client.search_model_versions("name = 'tones'")) == 1  # the refused --alias registered nothing


def test_export_onnx_matches_keras_and_never_leaves_half_an_export(trained, logged, notebook_data, tmp_path):
    import onnxruntime

    run_id, uri = trained
    run = logged
    out = tmp_path / "exported"
    result = cli("export", run_id, out, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "audio.json", "decoder.onnx", "encoder.onnx",
                                                     "max_values.npy", "min_values.npy", "vaekit-export.json",
                                                     "vocoder.json"]
    z = np.random.default_rng(3).standard_normal((5, LATENT), dtype=np.float32)
    decoder = onnxruntime.InferenceSession(str(out / "decoder.onnx"))
    assert [i.name for i in decoder.get_inputs()] == ["z"]
    np.testing.assert_allclose(decoder.run(None, {"z": z})[0], run.model.decode(z), atol=1e-4)
    x = np.load(notebook_data / "x_test.npy")[:3, ..., None].astype(np.float32)
    encoder = onnxruntime.InferenceSession(str(out / "encoder.onnx"))
    for got, want in zip(encoder.run(None, {"mel": x}), run.model.encode(x)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / "max_values.npy"), run.max_values)
    assert json.loads((out / "audio.json").read_text()) == run.audio.to_dict()
    assert "power = 10 ** (dB / 10)" in (out / "README.txt").read_text()
    # The whole bundle, read from OUT alone as README.txt says: decode → dB → the named vocoder → the audio vaekit makes.
    from vaekit.audio import AudioParams
    from vaekit.components import get_component, vocode

    low, high = np.load(out / "min_values.npy"), np.load(out / "max_values.npy")
    mel_db = decoder.run(None, {"z": z})[0][..., 0] * (high - low) + low
    np.testing.assert_allclose(mel_db, run.denormalize(run.model.decode(z)[..., 0]), atol=1e-2)  # dB
    named = json.loads((out / "vocoder.json").read_text())
    comp = get_component("vocoder", named["name"])
    waves = vocode(comp, comp.create(AudioParams.from_dict(json.loads((out / "audio.json").read_text())), **named["options"]),
                   mel_db.astype(np.float32))
    expected, _ = reference_waves(run, z)
    np.testing.assert_allclose(waves, expected, atol=1e-3)

    (out / "marker").write_text("old")
    assert error_line(cli("export", run_id, out, "--tracking-uri", uri)) == \
        f"Error: {out}: already exists (--force replaces it, if an earlier vaekit export wrote it)"
    assert (out / "marker").exists()
    assert error_line(cli("export", "0123456789abcdef", tmp_path / "typo", "--tracking-uri", uri)) == \
        f"Error: run 0123456789abcdef: not found in the tracking store {uri}"
    again = cli("export", run_id, out, "--format", "saved_model", "--force", "--tracking-uri", uri)
    assert again.exit_code == 0, again.output
    assert not (out / "marker").exists() and (out / "decoder" / "saved_model.pb").is_file()
    import tensorflow as tf

    loaded = tf.saved_model.load(str(out / "decoder"))  # held: its functions need the object alive
    np.testing.assert_allclose(loaded.serve(z).numpy(), run.model.decode(z), atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no staging folder, no typo/ left behind


def test_export_onto_a_full_disk_fails_in_one_line_and_leaves_nothing(trained, tmp_path):
    """A real mid-write failure: the disk (a tmpfs of 64 kB) fills while decoder.onnx is written."""
    import re
    from pathlib import Path

    from test_full_disk import tmpfs

    run_id, uri = trained
    with tmpfs(tmp_path / "disk", "64k") as disk:
        result = cli("export", run_id, disk / "out", "--tracking-uri", uri)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert re.match(r"Error: cannot write \(No space left on device\); traceback in (\S+)$", lines[0]), lines[0]
        Path(lines[0].rsplit(" ", 1)[1]).unlink()
        assert list(disk.iterdir()) == []  # no OUT, no staging folder
