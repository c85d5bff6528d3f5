"""Labels and conditional runs (issue #25): ``prepare --label`` → ``run --condition`` → ``generate --label``,
``interpolate --label``, ``reconstruct --label``, the served generator, ``export`` and ``explore``.

Two module-scoped runs are shared: one on tiny spoken digits (espeak-ng, 3 digits × 4 voices) prepared
by a real ``vaekit prepare`` and trained by a real ``vaekit run --condition digit``; one on the synthetic
voices conditioned on ``speaker`` (resconv, in-process).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import error_line, models_serve, run_cli, runs_in, write_notebook_data

DIGITS = ["one", "two", "three"]
VOICES = ["en-us", "en-gb", "en-us+f2", "en-gb+m3"]  # the speakers: parent folders en-us, en-gb, en-us_f2, en-gb_m3
SPEEDS, PITCHES = (140, 200), (40, 70)
LATENT = 4
#: A tiny conditional conv2 run: small dense layers, few classifier epochs (the metric's options); enough
#: epochs that its samples are sounds (2 epochs decode near-silence, where labels make no audible difference);
#: fastgl, as librosa's NNLS in griffinlim takes tens of seconds a loud clip on 2 busy cores.
RUN_FLAGS = ["--epochs", "6", "--batch-size", "8", "--latent-dim", str(LATENT), "--samples", "2",
             "--option", "encoder.dense1=64", "--option", "decoder.dense1=64", "--vocoder", "fastgl", "--option", "vocoder.n_iter=4",
             "--option", "metrics.per_class=4", "--option", "metrics.classifier_epochs=3", "--quiet"]


def cli(*args):
    from vaekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# -- data: espeak-ng digits, prepared with two labels --------------------------------------------------------------

@pytest.fixture(scope="module")
def digit_audio(tmp_path_factory) -> Path:
    """48 clips: DIGITS spoken by VOICES at two speeds and two pitches, as VOICE/DIGIT_SPEED_PITCH.wav."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("no espeak-ng: apt-get install espeak-ng (.ci/run does)")
    root = tmp_path_factory.mktemp("digits")
    jobs = []
    for voice in VOICES:
        folder = root / voice.replace("+", "_")
        folder.mkdir()
        for digit in DIGITS:
            for speed in SPEEDS:
                for pitch in PITCHES:
                    jobs.append(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                                 str(folder / f"{digit}_{speed}_{pitch}.wav"), digit])
    with ThreadPoolExecutor(4) as pool:
        for done in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True), jobs):
            assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def digit_data(digit_audio, tmp_path_factory) -> Path:
    """``vaekit prepare`` (a real process) with a label from the file names and one from the folders."""
    out = tmp_path_factory.mktemp("digit-data") / "digits"
    done = run_cli("prepare", digit_audio, out, "--label", "digit=field:0", "--label", "speaker=folder", "--quiet",
                   timeout=300)
    assert done.returncode == 0, done.stderr
    assert "labels:   digit (3 classes), speaker (4 classes)" in done.stdout
    return out


def test_prepare_reads_labels_from_file_names_and_folders_in_row_order(digit_data, digit_audio):
    from vaekit.components import load_dataset, resolve
    from vaekit.config import RunConfig
    from vaekit.data import load_notebook_dir

    meta = json.loads((digit_data / "dataset.json").read_text())
    assert meta["labels"] == [{"name": "digit", "classes": ["one", "three", "two"], "source": "field:0"},
                              {"name": "speaker", "classes": ["en-gb", "en-gb_m3", "en-us", "en-us_f2"], "source": "folder"}]
    ds = load_notebook_dir(digit_data)
    for split in ("train", "test"):
        files = meta[f"{split}_files"]
        y = np.load(digit_data / f"y_{split}.npy")
        assert y.shape == (len(files), 2) and y.dtype == np.int32
        assert [ds.labels["digit"].classes[i] for i in getattr(ds.labels["digit"], split)] == \
            [Path(f).stem.split("_")[0] for f in files]
        assert [ds.labels["speaker"].classes[i] for i in getattr(ds.labels["speaker"], split)] == \
            [Path(f).parent.as_posix() for f in files]
    # The audio-folder dataset takes the same labels as an option (prepared into the cache): the same arrays.
    config = RunConfig(data=str(digit_audio), options={"dataset": {"labels": "digit=field:0,speaker=folder",
                                                                   "progress": False}})
    folder = load_dataset(config, resolve(config))
    for name in ("digit", "speaker"):
        assert folder.labels[name].classes == ds.labels[name].classes
        np.testing.assert_array_equal(folder.labels[name].train, ds.labels[name].train)
        np.testing.assert_array_equal(folder.labels[name].test, ds.labels[name].test)


def test_bad_labels_are_one_line_errors_naming_the_file_and_leave_no_dataset(digit_audio, tmp_path):
    out = tmp_path / "out"
    first = sorted((digit_audio / "en-gb").iterdir())[0]
    for args, message in (
            (["--label", "digit=field:3"], f"Error: {first}: --label digit=field:3: the file has 3 _-separated field(s) "
                                           f"in its name {first.stem!r}, none at 3"),
            (["--label", "digit"], "Error: --label 'digit': expected NAME=SOURCE, SOURCE one of folder, field:K "
                                   "(e.g. digit=field:0)"),
            (["--label", "digit=name"], "Error: --label 'digit=name': unknown source 'name'; SOURCE is folder (the file's "
                                        "parent folder) or field:K (the K-th _-separated field of the file name, from 0)"),
            (["--label", "digit=field:0", "--label", "digit=folder"], "Error: --label 'digit=folder': label digit is given twice")):
        assert error_line(cli("prepare", digit_audio, out, "--quiet", *args)) == message
        assert not out.exists()
    # With --split-by speaker each speaker is on one side only: a speaker label cannot condition a model.
    line = error_line(cli("prepare", digit_audio, out, "--quiet", "--split-by", "speaker", "--label", "speaker=folder"))
    assert line.startswith(f"Error: {digit_audio}/") and "--label speaker: class " in line
    assert line.endswith("is only in the test split, so a model conditioned on it would never see it in training; "
                         "--split-by speaker puts each folder on one side only")
    top = tmp_path / "flat"
    shutil.copytree(digit_audio, top)
    shutil.copy(first, top / "loose.wav")
    assert error_line(cli("prepare", top, out, "--quiet", "--label", "speaker=folder")) == \
        f"Error: {top / 'loose.wav'}: --label speaker=folder: the file is not in a subfolder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat"]  # no OUT_DIR, no partial folder


def test_a_notebook_folder_takes_y_files_and_a_class_list_checked_in_one_line(tmp_path, store):
    from vaekit.data import load_notebook_dir
    from vaekit.errors import DataError

    data = write_notebook_data(tmp_path / "nb", n_train=12, n_test=4)
    np.save(data / "y_train.npy", np.arange(12) % 3)
    np.save(data / "y_test.npy", np.array([0, 1, 2, 2]))
    (data / "classes.txt").write_text("low\nmid\nhigh\n")
    labels = load_notebook_dir(data).labels
    assert list(labels) == ["label"] and labels["label"].classes == ["low", "mid", "high"]
    np.testing.assert_array_equal(labels["label"].test, [0, 1, 2, 2])
    bad = [(np.arange(11) % 3, None, f"{data / 'y_train.npy'}: label label: 11 labels for the 12 spectrograms of x_train"),
           (np.arange(12) * 0.5, None, f"{data / 'y_train.npy'}: label label: expected integer class indices, one per "
                                       "clip, got float64 of shape (12,)"),
           (np.arange(12) % 4, None, f"{data / 'y_train.npy'}: label label: row 3 holds class index 3, outside 0-2 (3 classes)"),
           (np.zeros((12, 2), int), np.zeros((4, 2), int), f"{data / 'dataset.json'}: needed to name the 2 labels of "
                                                           'y_train.npy ("labels": [{"name", "classes"}, ...], one per column)')]
    for train, test, message in bad:
        np.save(data / "y_train.npy", train)
        if test is not None:
            np.save(data / "y_test.npy", test)
        with pytest.raises(DataError) as info:
            load_notebook_dir(data)
        assert str(info.value) == message
    # A class only in the test split: a run conditioned on it is refused before anything starts.
    np.save(data / "y_train.npy", np.arange(12) % 2)
    np.save(data / "y_test.npy", np.array([0, 1, 2, 1]))
    assert error_line(cli("run", "--data", data, "--condition", "label", "--tracking-uri", store)) == \
        f"Error: {data / 'y_test.npy'}, row 2: class 'high' of label label is only in the test split; " \
        "a model conditioned on it never sees it in training"
    assert error_line(cli("run", "--data", data, "--condition", "digit", "--tracking-uri", store)) == \
        f"Error: --condition digit: {data} has no label 'digit'; its labels: label"
    assert runs_in(store) == []


NO_CONDITION = '''
import keras
import vaekit


def build(input_shape, latent_dim):
    """An encoder that takes no condition."""
    x = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Flatten()(x)
    return keras.Model(x, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)])


@vaekit.hookimpl
def register_encoders(register):
    register("plain", build)
'''


def test_an_encoder_without_condition_is_refused_for_a_conditional_run(digit_data, tmp_path, store):
    plugin = tmp_path / "plain.py"
    plugin.write_text(NO_CONDITION)
    assert error_line(cli("run", "--data", digit_data, "--condition", "digit", "--encoder", "plain", "--plugin", plugin,
                          "--tracking-uri", store)) == \
        f"Error: --condition digit: encoder 'plain' (from {plugin}) does not take a condition (its build function has " \
        "no `condition=None` parameter); conv2, resconv and dense do, or run without --condition"
    assert runs_in(store) == []


def test_conv2_resconv_and_dense_take_a_condition_and_conv2_without_it_is_the_notebooks():
    from vaekit.components import get_component
    from vaekit.model import check_model_shapes, one_hot

    shape, d, k = (50, 50, 1), 3, 4
    for name, options in (("conv2", {"dense1": 32}), ("resconv", {"filters": 4, "dense": 16}), ("dense", {"units": 16})):
        comps = {kind: get_component(kind, name) for kind in ("encoder", "decoder")}
        assert all(c.takes_condition and "condition" not in c.options for c in comps.values())  # not an option
        encoder = comps["encoder"].create(shape, d, condition=k, **options)
        decoder = comps["decoder"].create(d, shape, condition=k, **options)
        check_model_shapes(encoder, decoder, comps, shape, d, k)
        z = np.random.default_rng(0).standard_normal((k, d)).astype("float32")
        decoded = np.asarray(decoder([z, one_hot(np.arange(k), k)]))
        again = np.asarray(decoder([z, one_hot(np.roll(np.arange(k), 1), k)]))
        assert not np.allclose(decoded, again), name  # the label reaches the output
    enc = get_component("encoder", "conv2").create(shape, 20)
    assert enc.count_params() == 2_480_725 and len(enc.inputs) == 1


def test_sample_label_accuracy_counts_samples_classified_as_the_class_asked_for():
    """Three classes of spectrograms a classifier tells apart: samples that are the class asked for score 1,
    samples of another class 0; the classifier's own test accuracy is reported beside it."""
    from vaekit.audio_metrics import MetricContext
    from vaekit.default_plugins.metrics import build_sample_label_accuracy

    rng = np.random.default_rng(0)

    def clips(classes):  # class c: a loud band at rows 3c..3c+2, in noise (dB)
        x = rng.normal(-60, 3, (len(classes), 12, 10))
        for i, c in enumerate(classes):
            x[i, 3 * c:3 * c + 3] += 40
        return x.astype("float32")

    train_y, test_y = np.arange(48) % 3, np.arange(12) % 3
    train, test = clips(train_y), clips(test_y)
    metric = build_sample_label_accuracy(per_class=8, classifier_epochs=15)
    for shift, expected in ((0, 1.0), (1, 0.0)):
        context = MetricContext(train, "digit", ["a", "b", "c"], train_y, test_y,
                                lambda c, n, s=shift: clips([(c + s) % 3] * n))
        got = metric(test, test, None, None, None, context=context)
        assert got["sample_label_classifier_accuracy"] == 1.0
        assert got["sample_label_accuracy"] == expected, (shift, got)
    assert metric(test, test, test, None, None, context=MetricContext(train=train)) == {}  # unconditional: nothing


# -- one conditional run on the digits, in a real process ---------------------------------------------------------

@pytest.fixture(scope="module")
def digit_run(digit_data, tmp_path_factory):
    """``vaekit run --condition digit`` on the prepared digits: (run_id, tracking URI, its stdout)."""
    where = tmp_path_factory.mktemp("digit-store")
    uri = f"sqlite:///{where / 'mlflow.db'}"
    done = run_cli("run", "--data", digit_data, "--condition", "digit", "--tracking-uri", uri, *RUN_FLAGS,
                   "--audio-every", "6", cwd=where, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("run id:"))
    return run_id, uri, done.stdout


@pytest.fixture(scope="module")
def digit_logged(digit_run):
    from vaekit.logged import open_run

    return open_run(digit_run[0], digit_run[1])


def reference(run, z, labels, vocoder=None, served=False):
    """What the run's decoder (with ``labels``: class indices or one-hot rows), denormalisation and vocoder make of z,
    clipped to [-1, 1] as a WAV file holds it; ``served``: the decoder's output clipped to its training range first,
    as the served generator does."""
    from vaekit.components import vocode
    from vaekit.logged import build_vocoders

    (comp, fn), = build_vocoders(run).values()
    x = run.model.decode(z, labels)[..., 0]
    return np.clip(vocode(comp, fn, run.denormalize(np.clip(x, 0, 1) if served else x)), -1, 1)


def test_a_conditional_run_logs_its_condition_classes_labels_and_label_accuracy(digit_run):
    import mlflow

    run_id, uri, stdout = digit_run
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params["condition"] == "digit"
    assert run.data.params["condition.classes"] == "one,three,two"
    for key in ("sample_label_accuracy", "sample_label_classifier_accuracy"):
        assert 0 <= run.data.metrics[key] <= 1, key
    assert "sample_label_accuracy" in stdout.split("metrics:", 1)[1].splitlines()[0]
    condition = json.loads(Path(client.download_artifacts(run_id, "data/condition.json")).read_text())
    assert condition == {"name": "digit", "classes": ["one", "three", "two"]}
    training = next(d.dataset for d in run.inputs.dataset_inputs
                    if any(t.value == "training" for t in d.tags))
    profile, schema = json.loads(training.profile), json.loads(training.schema)
    assert profile["labels.digit"] == "one,three,two" and profile["labels.speaker"] == "en-gb,en-gb_m3,en-us,en-us_f2"
    assert [t["name"] for t in json.loads(schema["mlflow_tensorspec"]["targets"])] == ["digit", "speaker"]
    assert profile["targets_shape"] == {"digit": [int(run.data.params["data.train"])],
                                        "speaker": [int(run.data.params["data.train"])]}
    # --audio-every: the last epoch's samples are the run's own, each decoded with its class (sample 1: class 1)
    import soundfile as sf

    for name in ("sample_00.wav", "sample_01.wav"):
        heard, _ = sf.read(client.download_artifacts(run_id, f"epochs/006/{name}"))
        final, _ = sf.read(client.download_artifacts(run_id, f"samples/{name}"))
        np.testing.assert_array_equal(heard, final, err_msg=name)


def test_generate_label_in_a_real_process_draws_that_class(digit_run, digit_logged, tmp_path):
    from vaekit.model import sample_latent

    run_id, uri, _ = digit_run
    done = run_cli("generate", run_id, "--label", "two", "-n", "2", "--out", tmp_path, "--no-log", "--tracking-uri", uri,
                   cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "seed_0_digit_two"
    waves = [sf.read(folder / "fastgl" / f"sample_{i:02d}.wav", dtype="float32")[0] for i in range(2)]
    z = sample_latent(2, LATENT, 0)
    two = digit_logged.classes.index("two")
    wanted = reference(digit_logged, z, np.full(2, two))
    other = reference(digit_logged, z, np.full(2, digit_logged.classes.index("one")))
    for got, want, not_want in zip(waves, wanted, other):
        np.testing.assert_allclose(got, want, atol=1e-3)  # 16-bit PCM
        assert not np.allclose(got, not_want, atol=1e-3)  # another class's sound would not pass: the label was used
    assert (folder / "grid.png").is_file()
    wrong = cli("generate", run_id, "--label", "eleven", "--no-log", "--out", tmp_path / "x", "--tracking-uri", uri)
    assert error_line(wrong) == "Error: --label: 'eleven' is not a class of digit; its classes: one, three, two"
    assert not (tmp_path / "x").exists()


def test_interpolate_between_two_labels_at_a_fixed_z_and_reconstruct_with_a_label(digit_run, digit_logged, digit_audio,
                                                                                   tmp_path):
    from vaekit.commands.generate import interpolate, reconstruct
    from vaekit.errors import ConfigError
    from vaekit.model import sample_latent

    run = digit_logged
    out = interpolate(run.run_id, seeds=(3, 3), labels=("one", "two"), steps=3, out=tmp_path, log=False, run=run)
    folder = tmp_path / "interpolate_seeds_3_3_digit_one_two"
    got = [sf.read(folder / "fastgl" / f"step_{i:02d}.wav", dtype="float32")[0] for i in range(3)]
    a, b = run.one_hot([run.classes.index("one"), run.classes.index("two")])
    z = np.repeat(sample_latent(1, LATENT, 3), 3, axis=0)
    want = reference(run, z, np.stack([a, (a + b) / 2, b]))  # the one-hot walks, z stays
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-3)
    assert (folder / "strip.png").is_file() and out.metrics
    with pytest.raises(ConfigError, match="a walk between seeds needs --label A B"):
        interpolate(run.run_id, seeds=(0, 1), out=tmp_path, log=False, run=run)
    clip = sorted((digit_audio / "en-us").glob("two_*.wav"))[0]
    with pytest.raises(ConfigError, match=r"conditioned on digit: give the inputs' class with --label \(one of one, three, two\)"):
        reconstruct(run.run_id, clip, out=tmp_path / "r", run=run)
    done = reconstruct(run.run_id, clip, out=tmp_path / "r", run=run, label="two")
    assert [p.name for p in done.files if p.suffix == ".wav"] == [f"{clip.stem}.reconstructed.wav"]


def test_export_gives_the_decoder_and_encoder_the_label_input(digit_run, digit_logged, tmp_path):
    import onnxruntime

    run_id, uri, _ = digit_run
    out = tmp_path / "exported"
    assert cli("export", run_id, out, "--tracking-uri", uri).exit_code == 0
    assert json.loads((out / "condition.json").read_text()) == {"name": "digit", "classes": ["one", "three", "two"]}
    readme = (out / "README.txt").read_text()
    assert "decoder.onnx: z (batch, 4) float32, label (batch, 3) float32  ->  mel" in readme
    assert "label: the class one-hot (batch, 3) float32 of the run's condition 'digit'" in readme
    decoder = onnxruntime.InferenceSession(str(out / "decoder.onnx"))
    assert [i.name for i in decoder.get_inputs()] == ["z", "label"]
    z = np.random.default_rng(0).standard_normal((3, LATENT), dtype=np.float32)
    labels = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(decoder.run(None, {"z": z, "label": labels})[0], digit_logged.model.decode(z, labels),
                               atol=1e-4)
    encoder = onnxruntime.InferenceSession(str(out / "encoder.onnx"))
    assert [i.name for i in encoder.get_inputs()] == ["mel", "label"]


def test_the_logged_conditional_vae_reconstructs_through_pyfunc_with_the_labels(digit_run, digit_logged):
    """The VAE's pyfunc takes ``{"mel", "label"}`` as its signature and input example say; a label per clip is used."""
    import mlflow

    run_id, uri, _ = digit_run
    mlflow.set_tracking_uri(uri)
    model_uri = mlflow.MlflowClient(uri).get_run(run_id).data.tags["vaekit.model_uri"]
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
    assert sorted(example) == ["label", "mel"] and example["label"].shape == (2, 3)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    x, vae = example["mel"], digit_logged.model
    for labels in (example["label"], np.eye(3, dtype=np.float32)[[2, 0]]):
        expected = vae.decode(vae.encode(x, labels)[0], labels)
        np.testing.assert_allclose(pyfunc.predict({"mel": x, "label": labels}), expected, atol=1e-5)
    assert not np.allclose(pyfunc.predict({"mel": x, "label": np.eye(3, dtype=np.float32)[[0, 0]]}),
                           pyfunc.predict({"mel": x, "label": np.eye(3, dtype=np.float32)[[1, 1]]}), atol=1e-4)
    for bad, words in ((x, r"missing inputs \['mel', 'label'\]"),  # MLflow's schema check, before the model's
                       ({"mel": x, "label": np.ones((2, 3), np.float32)}, "expected one-hot rows of 3 classes")):
        with pytest.raises(mlflow.exceptions.MlflowException, match=words):
            pyfunc.predict(bad)


@pytest.fixture(scope="module")
def generator_server(digit_run, tmp_path_factory):
    """A real ``mlflow models serve`` of the digit run's generator: its base URL."""
    import mlflow

    run_id, uri, _ = digit_run
    model = mlflow.MlflowClient(uri).get_run(run_id).data.tags["vaekit.generator_uri"]
    with models_serve(model, uri, tmp_path_factory.mktemp("serve")) as base:
        yield base


def test_the_served_generator_takes_a_label_per_row(digit_logged, generator_server):
    from test_serving import post

    run = digit_logged
    z = np.random.default_rng(5).standard_normal((2, LATENT))
    status, body = post(f"{generator_server}/invocations", json.dumps({"inputs": {"z": z.tolist(), "label": ["two", "one"]}}))
    assert status == 200, body
    waves = [sf.read(io.BytesIO(base64.b64decode(item)), dtype="float32")[0] for item in body["predictions"]]
    want = reference(run, z.astype(np.float32), np.array([run.classes.index("two"), run.classes.index("one")]), served=True)
    for got, ref in zip(waves, want):
        np.testing.assert_allclose(got, ref, atol=1e-3)
    for request_body, reason in (
            ({"z": z.tolist(), "label": ["two", "eleven"]}, "label[1]: 'eleven' is not a class of digit; its classes: one, three, two"),
            ({"z": z.tolist()}, f"inputs: expected the fields 'z' (rows of {LATENT} numbers) and 'label' (one class of digit per "
                                "row), got ['z']"),
            ({"z": z.tolist(), "label": ["two"]}, "label: 1 class names for 2 rows of z; give one per row")):
        status, answer = post(f"{generator_server}/invocations", json.dumps({"inputs": request_body}))
        assert status == 400, answer
        assert answer["message"].splitlines()[-1] == f"Error: {reason}"


# -- the synthetic voices conditioned on speaker, explored ---------------------------------------------------------

@pytest.fixture(scope="module")
def speaker_run(tmp_path_factory):
    """A resconv run on 48 synthetic clips of 3 speakers, conditioned on speaker: (run_id, tracking URI)."""
    from vaekit.commands.run import run
    from vaekit.config import RunConfig
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    where = tmp_path_factory.mktemp("speaker-store")
    cwd = os.getcwd()
    os.chdir(where)
    small = {"filters": 4, "dense": 32}
    try:
        config = RunConfig(condition="speaker", encoder="resconv", decoder="resconv", vocoder="fastgl", epochs=1, batch_size=16,
                           latent_dim=LATENT, samples=1, tracking_uri=f"sqlite:///{where / 'mlflow.db'}",
                           options={"dataset": {"clips": 48, "speakers": 3, "progress": False}, "encoder": small,
                                    "decoder": small, "vocoder": {"n_iter": 4},
                                    "metrics": {"per_class": 4, "classifier_epochs": 2}})
        result = run(config, progress=False)
    finally:
        os.chdir(cwd)
    return result.run_id, config.tracking_uri


def test_explore_a_speaker_conditioned_run_label_picker_api(speaker_run):
    from test_explore import read_wav, request, served

    from vaekit.commands.explore import create_app, load_explorer

    explorer = load_explorer(speaker_run[0], tracking_uri=speaker_run[1])
    classes = ["speaker00", "speaker01", "speaker02"]
    with served(create_app(explorer)) as base:
        info = json.loads(request(f"{base}/api/info")[2])
        assert info["condition"] == {"name": "speaker", "classes": classes}
        points = json.loads(request(f"{base}/api/points")[2])
        assert points["label_kind"] == "speaker"  # the map is coloured by the condition
        names = [p["name"] for p in points["points"]]
        assert [p["label"] for p in points["points"]] == [n.split("/")[0] for n in names]
        clip = json.loads(request(f"{base}/api/clip/0")[2])
        assert clip["condition"] == names[0].split("/")[0]
        sounds = {}
        for speaker in classes[:2]:
            status, kind, body = request(f"{base}/api/decode", {"z": clip["z"], "label": speaker})
            assert (status, kind) == (200, "audio/wav"), body[:200]
            sounds[speaker] = read_wav(body)[1]
        assert not np.array_equal(sounds["speaker00"], sounds["speaker01"])  # the same z: the picker's class is used
        status, _, body = request(f"{base}/api/interpolate", {"z_a": clip["z"], "z_b": clip["z"], "label_a": "speaker00",
                                                               "label_b": "speaker02", "steps": 2})
        assert status == 200
        for bad, status, words in (({"z": clip["z"]}, 400, "label: this run is conditioned on speaker: give a class, one of speaker00"),
                                   ({"z": clip["z"], "label": "speaker09"}, 400,
                                    "label: 'speaker09' is not a class of speaker; its classes: speaker00, speaker01, speaker02"),
                                   ({"z": clip["z"], "label": 3}, 400, "label: expected a class name of speaker (a string)")):
            got, _, answer = request(f"{base}/api/decode", bad)
            assert got == status and words in json.loads(answer)["error"], answer
        got, _, answer = request(f"{base}/api/interpolate", {"z_a": clip["z"], "z_b": clip["z"]})
        assert got == 400 and "label_a: this run is conditioned on speaker" in json.loads(answer)["error"]
        kept = json.loads(request(f"{base}/api/keep", {"z": clip["z"], "label": "speaker01"})[2])
        assert kept["artifacts"][0].endswith(".wav")


def test_the_page_has_a_label_picker_that_decodes_the_class_picked(speaker_run):
    """In a real headless Chromium: the picker lists the classes, a clip click sets it to the clip's, a change
    decodes the same z as the class picked; the map is coloured by the condition."""
    from test_explore import served

    from conftest import chromium_browser
    from vaekit.commands.explore import create_app, load_explorer


    explorer = load_explorer(speaker_run[0], tracking_uri=speaker_run[1])
    with served(create_app(explorer)) as base, chromium_browser() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        assert page.locator("#label-picker").is_visible() and page.locator("#label-name").text_content() == "speaker"
        assert page.eval_on_selector_all("#label option", "os => os.map((o) => o.value)") == \
            ["speaker00", "speaker01", "speaker02"]
        assert page.locator("#colour-by").input_value() == "speaker"
        first = page.locator("#map circle.pt").first
        clip = explorer.run.classes[explorer.classes_of[int(first.get_attribute("data-index"))]]
        first.dispatch_event("click")
        page.wait_for_function(f"document.getElementById('label').value === {json.dumps(clip)}")
        other = next(c for c in ("speaker00", "speaker01") if c != clip)
        with page.expect_request(lambda r: r.url.endswith("/api/decode")) as sent:
            page.locator("#label").select_option(other)
        assert json.loads(sent.value.post_data)["label"] == other
        page.wait_for_function("window.explore.decodes >= 1 && !window.explore.inFlight")
        assert page.locator("#current-what").text_content() == f"decoded from the sliders as speaker {other}"
        assert errors == []
