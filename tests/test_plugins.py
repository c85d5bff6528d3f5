"""Plugins for users: listing, the three ways to add one, every hook end to end, and every mistake's message.

Runs are real (tiny data, real Keras, a real MLflow store in tmp_path); most go through the CLI
in-process with click's CliRunner, and a few through real subprocesses to prove there is no traceback.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vaekit
from conftest import docs_page, error_line, run_cli, runs_in
from vaekit import hookspecs
from vaekit.cli import main
from vaekit.errors import PluginError

# Small, fast components for runs whose subject is not the network.
FAST = ["--encoder", "dense", "--decoder", "dense", "--option", "encoder.units=32", "--option", "decoder.units=32",
        "--epochs", "1", "--samples", "1", "--batch-size", "48", "--quiet"]
QUICK_GRIFFINLIM = ["--option", "vocoder.n_iter=2"]


@pytest.fixture(autouse=True)
def restore_vaekit_plugins(monkeypatch):
    """``--plugin`` exports VAEKIT_PLUGINS for child processes; undo that after each test, even when it was unset."""
    monkeypatch.setenv("VAEKIT_PLUGINS", "")  # records the value before (maybe none) for teardown
    monkeypatch.delenv("VAEKIT_PLUGINS")


def cli(*args, env=None):
    """Invoke ``vaekit ARGS`` in-process; returns click's Result (output = stdout + stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


# -- a plugin with one component of every kind, registered from Python --------------------------------

class EveryKind:
    """A test plugin (an object, not a module) implementing every hook with a small component."""

    __version__ = "9.9"

    @staticmethod
    def build_encoder(input_shape, latent_dim, hidden=16):
        import keras

        x_in = keras.Input(shape=tuple(input_shape))
        h = keras.layers.Dense(hidden, activation="tanh")(keras.layers.Flatten()(x_in))
        return keras.Model(x_in, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)])

    @staticmethod
    def build_decoder(latent_dim, output_shape, hidden=16):
        import keras

        z = keras.Input(shape=(latent_dim,))
        h = keras.layers.Dense(math.prod(output_shape), activation="sigmoid")(keras.layers.Dense(hidden)(z))
        return keras.Model(z, keras.layers.Reshape(tuple(output_shape))(h))

    @staticmethod
    def build_loss(weight=2.0):
        def loss(x, x_hat, z_mean, z_log_var):
            from keras import ops

            l1 = ops.mean(ops.abs(ops.cast(x, x_hat.dtype) - x_hat))
            kl = 0.5 * ops.mean(ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)
            return {"loss": weight * l1 + kl, "l1": l1, "kl": kl}

        return loss

    @staticmethod
    def build_vocoder(audio, freq=440.0):
        def vocode(mel_db):  # a sine per clip: easy to recognise in the logged WAV
            t = np.arange(audio.samples) / audio.sr
            return np.stack([0.5 * np.sin(2 * np.pi * freq * t) for _ in mel_db]).astype(np.float32)

        return vocode

    @staticmethod
    def build_dataset(path, audio, test_share=0.25):
        from vaekit.data import Dataset

        with np.load(Path(path) / "clips.npz") as f:
            x, lo, hi = f["x"], f["lo"], f["hi"]
        n_test = int(len(x) * test_share)
        return Dataset(x[n_test:], x[:n_test], lo, hi, audio=audio, source=str(path))

    @vaekit.hookimpl
    def register_encoders(self, register):
        register("tiny", self.build_encoder)

    @vaekit.hookimpl
    def register_decoders(self, register):
        register("tiny", self.build_decoder)

    @vaekit.hookimpl
    def register_losses(self, register):
        register("l1-kl", self.build_loss)

    @vaekit.hookimpl
    def register_vocoders(self, register):
        register("sine", self.build_vocoder)

    @vaekit.hookimpl
    def register_datasets(self, register):
        register("npz-clips", self.build_dataset, detect=lambda p: (Path(p) / "clips.npz").is_file())


@pytest.fixture
def every_kind():
    """EveryKind registered the third way: Python code on the plugin manager."""
    from vaekit.plugins import get_plugin_manager

    get_plugin_manager().register(EveryKind(), "every-kind")
    return "every-kind"


@pytest.fixture
def npz_data(notebook_data, tmp_path) -> Path:
    """The notebook data in the test dataset's own format (one clips.npz), which only EveryKind reads."""
    x = np.concatenate([np.load(notebook_data / "x_train.npy"), np.load(notebook_data / "x_test.npy")])
    d = tmp_path / "clips"
    d.mkdir()
    np.savez(d / "clips.npz", x=x, lo=np.load(notebook_data / "min_values.npy"),
             hi=np.load(notebook_data / "max_values.npy"))
    return d


# -- vaekit plugins ---------------------------------------------------------------------------------

def test_plugins_lists_every_kind_with_plugin_version_and_options(every_kind):
    res = cli("plugins", "--json")
    assert res.exit_code == 0, res.output
    listing = json.loads(res.stdout)
    assert list(listing) == ["encoder", "decoder", "loss", "vocoder", "dataset", "discriminator", "metrics"]
    by_name = {kind: {c["name"]: c for c in comps} for kind, comps in listing.items()}
    assert by_name["encoder"]["dense"]["options"] == {"units": 512, "layers": 2, "activation": "relu"}
    assert by_name["encoder"]["dense"]["plugin"] == "vaekit.default_plugins.dense"
    assert by_name["encoder"]["dense"]["version"] == vaekit.__version__
    assert by_name["loss"]["kl-warmup"]["options"] == {"lambda": 500.0, "warmup_epochs": 5}
    assert by_name["vocoder"]["griffinlim"]["options"]["n_iter"] == 32
    assert by_name["discriminator"]["patch"]["options"] == {"filters": 32, "layers": 3}
    for kind, name, options in [("encoder", "tiny", {"hidden": 16}), ("decoder", "tiny", {"hidden": 16}),
                                ("loss", "l1-kl", {"weight": 2.0}), ("vocoder", "sine", {"freq": 440.0}),
                                ("dataset", "npz-clips", {"test_share": 0.25})]:
        # No declared ranges: a float option is still refused NaN and ±inf, and says so.
        ranges = {k: {"finite": True} for k, v in options.items() if isinstance(v, float)}
        assert by_name[kind][name] == {"name": name, "plugin": "every-kind", "version": "9.9", "options": options,
                                       "ranges": ranges, "description": ""}
    text = cli("plugins")
    assert text.exit_code == 0
    for heading in ("encoders:", "decoders:", "losses:", "vocoders:", "datasets:", "discriminators:"):
        assert heading in text.stdout.splitlines()
    assert re.search(r"kl-warmup\s+vaekit.default_plugins.losses", text.stdout)
    assert "options: lambda=500.0, warmup_epochs=5" in text.stdout


# -- three ways to add a plugin ---------------------------------------------------------------------

ENCODER_PLUGIN = '''
    import vaekit

    def build(input_shape, latent_dim, width=8):
        """A {name} encoder."""
        raise RuntimeError("not built in this test")

    @vaekit.hookimpl
    def register_encoders(register):
        register("{name}", build)
'''


def test_a_new_kind_is_its_record_and_hook_spec_to_plugins_the_listing_lookup_and_a_run(
        tmp_path, monkeypatch, notebook_data, store):
    """Adding a kind (kinds.py's docstring): with only a Kind record and its ``register_*`` hook spec, a plugin file
    registers components of it, ``vaekit plugins`` lists them, get_component builds one with its contract and
    checked options, and a run selects one with ``--component KIND=NAME`` and logs it as a param like the others."""
    from mlflow.tracking import MlflowClient

    from vaekit import components, kinds

    widget = kinds.Kind("widget", "widgets", ("audio",), "Widget component.", "anything the widget's user takes")
    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, widget))  # every module reads the kinds when it needs them

    def register_widgets(register): ...

    monkeypatch.setattr(hookspecs, "register_widgets", hookspecs.hookspec(register_widgets), raising=False)
    assert register_widgets.__doc__ == "Register widgets: `build(audio, **options)` → anything the widget's user takes."
    plugin = write(tmp_path / "widgets.py", """
        import vaekit

        @vaekit.hookimpl
        def register_widgets(register):
            register("hum", lambda audio, level=1: (audio, level), options={"level": {"min": 0}})
    """)
    res = cli("plugins", "--plugin", plugin)
    assert res.exit_code == 0, res.output
    assert re.search(r"^widgets:\n  hum +.*widgets\.py", res.output, re.M), res.output
    hum = components.get_component("widget", "hum")
    assert hum.options == {"level": 1}
    assert hum.create("AUDIO", level=3) == ("AUDIO", 3)
    with pytest.raises(PluginError, match="widget.level"):
        hum.create("AUDIO", level=-1)
    res = cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, *FAST, *QUICK_GRIFFINLIM,
              "--samples", "0", "--component", "widget=hum", "--option", "widget.level=3")
    assert res.exit_code == 0, res.output
    [run] = runs_in(store)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["widget"], p["widget.plugin"], p["widget.level"]) == ("hum", str(plugin.resolve()), "3")
    assert "components" not in p  # the selection is the param `widget`, as `encoder` is
    toml = Path(MlflowClient(store).download_artifacts(run.info.run_id, "config.toml")).read_text()
    assert '\n[components]\n"widget" = "hum"\n' in toml  # so --resume and --config select it again
    # Selecting a kind that has its own flag, or no kind, this way is a one-line error.
    for item, error in (("encoder=dense", "--component encoder: encoder has its own setting; use --encoder NAME"),
                        ("gadget=x", "--component gadget: unknown kind 'gadget'")):
        res = cli("run", "--plugin", plugin, "--tracking-uri", store, "--component", item)
        assert res.exit_code == 2 and error in res.output, res.output


def test_plugin_files_from_flags_and_vaekit_plugins(tmp_path, monkeypatch):
    a = write(tmp_path / "a.py", ENCODER_PLUGIN.format(name="enc-a"))
    b = write(tmp_path / "b.py", ENCODER_PLUGIN.format(name="enc-b"))
    c = write(tmp_path / "c.py", ENCODER_PLUGIN.format(name="enc-c"))
    monkeypatch.setenv("VAEKIT_PLUGINS", os.pathsep.join([str(c), ""]))
    res = cli("plugins", "--json", "--plugin", a, "--plugin", b)
    assert res.exit_code == 0, res.output
    encoders = {e["name"]: e for e in json.loads(res.stdout)["encoder"]}
    assert {"enc-a", "enc-b", "enc-c"} <= set(encoders)
    assert encoders["enc-a"]["plugin"] == str(a.resolve())
    assert encoders["enc-a"]["options"] == {"width": 8} and encoders["enc-a"]["description"] == "A enc-a encoder."
    assert encoders["enc-a"]["version"] == "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()[:12]
    # Processes vaekit starts get the --plugin files too.
    assert os.environ["VAEKIT_PLUGINS"].split(os.pathsep) == [str(c), str(a.resolve()), str(b.resolve())]


def test_python_code_registers_a_plugin_and_gets_the_same_checks():
    from vaekit.components import get_component
    from vaekit.plugins import get_plugin_manager

    class Mine:
        @vaekit.hookimpl
        def register_losses(self, register):
            register("mine", lambda scale=1.0: None)

    get_plugin_manager().register(Mine(), "mine-plugin")
    assert get_component("loss", "mine").plugin == "mine-plugin"

    class Typo:
        @vaekit.hookimpl
        def register_loss(self, register):
            pass

    with pytest.raises(PluginError, match=r"^plugin typo-plugin: unknown hook 'register_loss'; did you mean register_losses\?"):
        get_plugin_manager().register(Typo(), "typo-plugin")
    with pytest.raises(PluginError, match=r"^plugin mine-plugin: the plugin name .mine-plugin. is taken \(by a Mine object\); give it another name$"):
        get_plugin_manager().register(EveryKind(), "mine-plugin")


def test_nothing_is_imported_from_the_working_directory(tmp_path):
    marker = tmp_path / "imported.txt"
    bomb = f"open({str(marker)!r}, 'w').write('imported')\n" + ENCODER_PLUGIN.format(name="from-cwd")
    for name in ("vaekit_plugin.py", "plugins.py", "plugin.py", "conftest.py", "hookspecs.py"):
        write(tmp_path / name, bomb)
    res = run_cli("plugins", "--json", cwd=tmp_path, env={"VAEKIT_PLUGINS": ""})
    assert res.returncode == 0, res.stderr
    assert "from-cwd" not in res.stdout and not marker.exists()


# -- mistakes in plugin files: one line naming the file and what to fix -------------------------------

FILE_MISTAKES = {
    "missing": (None, "no such file"),
    "syntax": ("import vaekit\ndef build(:\n    pass\n", "syntax error at line 2: invalid syntax"),
    "import": ("import vaekit\nimport not_a_module_vaekit_xyz\n",
               "fails on import: ModuleNotFoundError: No module named 'not_a_module_vaekit_xyz' (line 2)"),
    "raises": ("import vaekit\n\nraise RuntimeError('configure me first')\n",
               "fails on import: RuntimeError: configure me first (line 3)"),
    "unknown-hook": ("import vaekit\n@vaekit.hookimpl\ndef register_encoder(register):\n    pass\n",
                     "unknown hook 'register_encoder'; did you mean register_encoders? the hooks are: "
                     + ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))),
    "wrong-args": ("import vaekit\n@vaekit.hookimpl\ndef register_losses(reg, extra):\n    pass\n",
                   "hook register_losses(reg, extra) has the wrong arguments; "
                   "write it as def register_losses(register): and call register(name, build) inside"),
    "unmarked": ("import vaekit\ndef register_losses(register):\n    pass\n",
                 "function register_losses is not marked as a hook; put @vaekit.hookimpl above it"),
    "no-hooks": ("import vaekit\nX = 1\n", "defines no hooks; mark each hook function with @vaekit.hookimpl "
                 "(the hooks are: " + ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_"))) + ")"),
}


@pytest.mark.parametrize("case", FILE_MISTAKES)
def test_plugin_file_mistakes(case, tmp_path):
    code, message = FILE_MISTAKES[case]
    path = tmp_path / f"{case}.py"
    if code is not None:
        path.write_text(code)
    assert error_line(cli("plugins", "--plugin", path)) == f"Error: --plugin {path}: {message}"


def test_vaekit_plugins_variable_names_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_PLUGINS", str(tmp_path / "gone.py"))
    assert error_line(cli("plugins")) == f"Error: VAEKIT_PLUGINS {tmp_path / 'gone.py'}: no such file"


COMPONENT_MISTAKES = {
    "twice": ("register('twin', lambda input_shape, latent_dim: None)",
              "encoder 'twin' is registered twice: by {a} and by {b}; rename one of them"),
    "builtin-name": ("register('dense', lambda input_shape, latent_dim: None)",
                     "encoder 'dense' is registered twice: by vaekit.default_plugins.dense and by {a}; "
                     "rename one of them"),
    "signature": ("register('odd', lambda shape: None)",
                  "{a}: encoder 'odd' has build(shape); it must be build(input_shape, latent_dim, **options) "
                  "with a default for every option"),
    "no-default": ("register('odd', lambda input_shape, latent_dim, units: None)",
                   "{a}: encoder 'odd' has build(input_shape, latent_dim, units); it must be "
                   "build(input_shape, latent_dim, **options) with a default for every option"),
    "hook-raises": ("register(undefined_name, None)",
                    "{a}: register_encoders failed: NameError: name 'undefined_name' is not defined"),
}


@pytest.mark.parametrize("case", COMPONENT_MISTAKES)
def test_component_registration_mistakes(case, tmp_path):
    body, message = COMPONENT_MISTAKES[case]
    files = []
    for n in ("a", "b") if case == "twice" else ("a",):
        files.append(write(tmp_path / f"{n}.py", f'''
            import vaekit

            @vaekit.hookimpl
            def register_encoders(register):
                {body}
        '''))
    args = [a for f in files for a in ("--plugin", f)]
    line = error_line(cli("plugins", *args))
    a, b = (str(f.resolve()) for f in (files * 2)[:2])
    assert line == "Error: " + message.format(a=a, b=b)


BROKEN = '''
    import numpy as np
    import vaekit


    def boom(input_shape, latent_dim):
        raise ValueError("no good\\nat all")


    def one_output(input_shape, latent_dim):
        import keras

        x = keras.Input(shape=tuple(input_shape))
        return keras.Model(x, keras.layers.Dense(latent_dim + 1)(keras.layers.Flatten()(x)))


    def wrong_input(input_shape, latent_dim):
        import keras

        x = keras.Input(shape=(7,))
        return keras.Model(x, [keras.layers.Dense(latent_dim)(x), keras.layers.Dense(latent_dim)(x)])


    def no_channel(latent_dim, output_shape):
        import keras

        z = keras.Input(shape=(latent_dim,))
        y = keras.layers.Dense(output_shape[0] * output_shape[1])(z)
        return keras.Model(z, keras.layers.Reshape(tuple(output_shape[:2]))(y))


    def vocoder(audio, mode="flat"):
        calls = []

        def vocode(mel_db):
            calls.append(len(mel_db))
            if mode == "flat":
                return np.zeros(audio.samples)
            if mode == "nan":
                return np.full((len(mel_db), audio.samples), np.nan)
            if len(calls) > 1:  # "late": fine in the pre-flight check, broken after training
                raise RuntimeError("lost the GPU")
            return np.zeros((len(mel_db), audio.samples))

        return vocode


    @vaekit.hookimpl
    def register_encoders(register):
        register("boom", boom)
        register("one-output", one_output)
        register("wrong-input", wrong_input)


    @vaekit.hookimpl
    def register_decoders(register):
        register("no-channel", no_channel)


    @vaekit.hookimpl
    def register_vocoders(register):
        register("broken", vocoder)
'''

DENSE = ["--encoder", "dense", "--decoder", "dense", "--option", "encoder.units=32", "--option", "decoder.units=32"]
RUN_MISTAKES = {
    "unknown-name": (["--encoder", "nope"],
                     "unknown encoder 'nope'; available: {encoders} (`vaekit plugins` lists them; "
                     "a plugin file is loaded with --plugin FILE.py)"),
    "unknown-option": ([*DENSE, "--option", "encoder.unit=3"],
                       "--option encoder.unit: encoder 'dense' has no option 'unit'; "
                       "its options are: activation, layers, units"),
    "wrong-type": ([*DENSE, "--option", "encoder.layers=two"],
                   "--option encoder.layers='two': expected int (encoder 'dense''s option takes the type of its "
                   "default 2)"),
    "build-raises": (["--encoder", "boom", "--decoder", "dense"],
                     "encoder 'boom' (from {f}) failed to build: ValueError: no good at all; "
                     "fix its build function or its options"),
    "encoder-shape": (["--encoder", "one-output", "--decoder", "dense", "--latent-dim", "4"],
                      "encoder 'one-output' (from {f}): expected outputs (z_mean, z_log_var) of shapes "
                      "[(batch, 4), (batch, 4)], got [(2, 5)] for a batch of 2"),
    "encoder-fails": (["--encoder", "wrong-input", "--decoder", "dense"],
                      "encoder 'wrong-input' (from {f}) fails on input of shape (2, 50, 50, 1): ValueError: "),
    "decoder-shape": (["--encoder", "dense", "--decoder", "no-channel"],
                      "decoder 'no-channel' (from {f}): expected output of shape (batch, 50, 50, 1), "
                      "got (2, 50, 50) for a batch of 2"),
    "vocoder-shape": ([*DENSE, "--vocoder", "broken"],
                      "vocoder 'broken' (from {f}): expected waveforms of shape (1, samples) for mel spectrograms "
                      "of shape (1, 50, 50), got (22050,) (pre-flight check on a dummy spectrogram, "
                      "before training)"),
    "vocoder-nan": ([*DENSE, "--vocoder", "broken", "--option", "vocoder.mode=nan"],
                    "vocoder 'broken' (from {f}) returned NaN or Inf samples (pre-flight check on a dummy "
                    "spectrogram, before training)"),
}


@pytest.mark.parametrize("case", RUN_MISTAKES)
def test_run_mistakes_fail_before_any_mlflow_run(case, notebook_data, store, tmp_path):
    args, message = RUN_MISTAKES[case]
    broken = write(tmp_path / "broken.py", BROKEN)
    res = cli("run", "--plugin", broken, "--data", notebook_data, "--tracking-uri", store, "--quiet", *args)
    line = error_line(res)
    from vaekit.components import all_components

    encoders = sorted(all_components("encoder"))  # built-ins (other issues may add some) and broken.py's
    assert {"conv2", "dense", "boom", "one-output", "wrong-input"} <= set(encoders)
    expected = "Error: " + message.format(f=broken.resolve(), encoders=", ".join(encoders))
    assert line.startswith(expected) if expected.endswith(": ") else line == expected, line
    assert runs_in(store) == []


def test_vocoder_failing_after_training_leaves_the_run_failed(notebook_data, store, tmp_path):
    from mlflow.tracking import MlflowClient

    broken = write(tmp_path / "broken.py", BROKEN)
    res = cli("run", "--plugin", broken, "--data", notebook_data, "--tracking-uri", store, *FAST,
              "--vocoder", "broken", "--option", "vocoder.mode=late")
    # The first vocoding after training is test_vocoded_mel_db's, of 4 reconstructed test clips.
    assert error_line(res) == (f"Error: vocoder 'broken' (from {broken.resolve()}) failed on mel spectrograms of "
                               "shape (4, 50, 50): RuntimeError: lost the GPU")
    [run] = runs_in(store)
    assert run.info.status == "FAILED"
    assert "lost the GPU" in run.data.tags["vaekit.error"]
    assert json.loads(run.data.tags["vaekit.plugin_files"]) == [str(broken.resolve())]
    assert MlflowClient(store).get_metric_history(run.info.run_id, "loss")  # it did train


def test_real_processes_print_one_line_and_no_traceback(notebook_data, store, tmp_path):
    broken = write(tmp_path / "broken.py", BROKEN)
    syntax = write(tmp_path / "syntax.py", "def (:\n")
    res = run_cli("plugins", "--plugin", syntax, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"Error: --plugin {syntax}: syntax error at line 1: invalid syntax" in res.stderr.splitlines()
    res = run_cli("run", "--plugin", broken, "--data", notebook_data, "--tracking-uri", store, "--quiet",
                  "--encoder", "one-output", "--decoder", "dense", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert [line for line in res.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: encoder 'one-output' (from {broken.resolve()}): expected outputs (z_mean, z_log_var) of shapes "
        "[(batch, 20), (batch, 20)], got [(2, 21)] for a batch of 2"]
    assert runs_in(store) == []


# -- every hook end to end, and every option in the params ------------------------------------------

def assert_every_option_logged(params: dict, **chosen):
    """Each option of each component the run used is a param ``KIND.KEY`` with its resolved value."""
    from vaekit.components import get_component

    for kind, name in chosen.items():
        assert params[kind] == name
        comp = get_component(kind, name)
        assert params[f"{kind}.plugin"] == comp.plugin and params[f"{kind}.plugin_version"] == comp.plugin_version
        for key, default in comp.options.items():
            assert f"{kind}.{key}" in params, (kind, key)


def test_every_hook_end_to_end_in_one_run(every_kind, npz_data, store):
    import soundfile as sf
    from mlflow.tracking import MlflowClient

    res = cli("run", "--data", npz_data, "--tracking-uri", store, "--encoder", "tiny", "--decoder", "tiny",
              "--loss", "l1-kl", "--vocoder", "sine", "--epochs", "2", "--samples", "2", "--batch-size", "32",
              "--latent-dim", "3", "--option", "encoder.hidden=8", "--option", "loss.weight=3",
              "--option", "vocoder.freq=1000", "--option", "dataset.test_share=0.5", "--quiet")
    assert res.exit_code == 0, res.output
    [run] = runs_in(store)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert_every_option_logged(p, encoder="tiny", decoder="tiny", loss="l1-kl", vocoder="sine", dataset="npz-clips")
    assert p["encoder.plugin"] == "every-kind" and p["encoder.plugin_version"] == "9.9"
    assert (p["encoder.hidden"], p["decoder.hidden"], p["loss.weight"], p["vocoder.freq"], p["dataset.test_share"]) == \
        ("8", "16", "3.0", "1000.0", "0.5")
    assert (p["data.train"], p["data.test"]) == ("64", "64")  # the dataset split 128 clips at test_share 0.5
    client = MlflowClient(store)
    # The loss's own terms are tracked per epoch, and its option is applied.
    for key in ("loss", "l1", "kl", "val_l1"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], key
    m = run.data.metrics
    assert m["test_loss"] == pytest.approx(3 * m["test_l1"] + m["test_kl"], rel=1e-4)
    # The vocoder made the WAVs: a 1000 Hz sine.
    wav, sr = sf.read(client.download_artifacts(run.info.run_id, "samples/sample_01.wav"))
    assert sr == 22050 and np.argmax(np.abs(np.fft.rfft(wav))) * sr / len(wav) == pytest.approx(1000, abs=2)
    assert "vaekit.plugin_files" not in run.data.tags  # registered from Python: no file to reload


def test_kl_warmup_logs_beta_rising_per_epoch_from_the_models_own_epoch(notebook_data, store):
    from mlflow.tracking import MlflowClient

    from vaekit.default_plugins.losses import build_kl_warmup

    # The loss is a pure function of its inputs and the epoch it is given: no global state.
    loss = build_kl_warmup(lambda_=2.0, warmup_epochs=4)
    x = np.full((2, 3), 0.5, dtype="float32")
    z = np.ones((2, 2), dtype="float32")
    betas = [float(loss(x, x, z, z * 0, epoch=np.float32(e))["beta"]) for e in (0, 1, 3, 4, 9, 1)]
    assert betas == [0.0, 0.25, 0.75, 1.0, 1.0, 0.25]

    # In a run, the epoch comes from the model being trained (a variable the training loop sets).
    res = cli("run", "--data", notebook_data, "--tracking-uri", store, *FAST, *QUICK_GRIFFINLIM, "--epochs", "3",
              "--samples", "0", "--loss", "kl-warmup", "--option", "loss.warmup_epochs=2", "--option", "loss.lambda=100")
    assert res.exit_code == 0, res.output
    [run] = runs_in(store)
    client = MlflowClient(store)

    def history(key):
        return {h.step: h.value for h in client.get_metric_history(run.info.run_id, key)}

    assert history("beta") == {0: 0.0, 1: 0.5, 2: 1.0}
    assert history("val_beta") == {0: 0.0, 1: 0.5, 2: 1.0}
    mse, kl, total = history("mse"), history("kl"), history("loss")
    assert total[0] == pytest.approx(100 * mse[0], rel=1e-4)  # β = 0: the KL is not in the loss yet
    assert total[1] == pytest.approx(100 * mse[1] + 0.5 * kl[1], rel=1e-4)
    assert total[2] == pytest.approx(100 * mse[2] + kl[2], rel=1e-4)
    assert_every_option_logged(run.data.params, encoder="dense", decoder="dense", loss="kl-warmup",
                               vocoder="griffinlim", dataset="notebook")
    assert run.data.params["loss.warmup_epochs"] == "2" and run.data.params["loss.lambda"] == "100.0"


# -- Docs: the tutorial runs as written, and every hook is documented ------------------------------

def test_docs_tutorial_encoder_runs_as_written(notebook_data, store, tmp_path):
    section = docs_page("plugins.md")
    match = re.search(r"<!-- tutorial: (\S+) -->\n```python\n(.*?)```", section, re.S)
    filename, code = match.groups()
    assert len(code.splitlines()) < 30, "the tutorial promises a complete encoder in under 30 lines"
    plugin = tmp_path / filename
    plugin.write_text(code)
    assert f"--plugin {filename} --encoder gru --decoder dense --option encoder.units=64" in section
    listing = cli("plugins", "--plugin", plugin)
    assert listing.exit_code == 0 and re.search(r"gru\s+" + re.escape(str(plugin.resolve())), listing.stdout)
    assert "options: units=32" in listing.stdout
    res = cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, *FAST, *QUICK_GRIFFINLIM,
              "--samples", "0", "--encoder", "gru", "--option", "encoder.units=8")
    assert res.exit_code == 0, res.output
    [run] = runs_in(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["encoder"] == "gru" and run.data.params["encoder.units"] == "8"
    assert run.data.params["encoder.plugin"] == str(plugin.resolve())
    assert run.data.params["encoder.plugin_version"].startswith("sha256:")
    assert json.loads(run.data.tags["vaekit.plugin_files"]) == [str(plugin.resolve())]


def test_every_hook_is_documented_with_its_kind_s_contract_as_the_record_says():
    """The contract prose lives in the kinds' records: each docs row is the record's, word for word."""
    from vaekit import kinds

    section = docs_page("plugins.md")
    hooks = {n for n in dir(hookspecs) if n.startswith("register_")}
    documented = set(re.findall(r"^\| `(register_\w+)\(register\)` \|", section, re.M))
    assert documented == hooks
    contracts = set(re.findall(r"^\| \w+ \| `register_.*$", docs_page("components.md"), re.M))
    assert contracts == {k.docs_row() for k in kinds.KINDS}, "docs/components.md's contracts differ from vaekit/kinds.py"
    for kind in kinds.KINDS:
        assert f"| `{kind.hook}(register)` | {kind.plural}: `{kind.signature}` |" in section.splitlines(), kind.hook
        assert inspect.getdoc(getattr(hookspecs, kind.hook)) == kind.doc()


def test_a_run_s_plugin_files_load_only_when_asked_and_after_being_announced(tmp_path):
    from vaekit.components import get_component
    from vaekit.plugins import load_plugin_file, load_run_plugin_files, plugin_hint, reset_plugin_manager

    a = write(tmp_path / "a.py", ENCODER_PLUGIN.format(name="enc-a"))
    tags = {"vaekit.plugin_files": json.dumps([str(a)])}
    assert plugin_hint(tags) == (f" (the run used plugin file {a}, not loaded: name it with --plugin FILE.py, "
                                 "or pass --trust-run-plugins to import the recorded paths)")
    shown = []
    assert load_run_plugin_files(tags, shown.append) == [str(a)] and load_run_plugin_files({}, shown.append) == []
    assert shown == [[str(a)]]  # the paths were shown before the import
    assert get_component("encoder", "enc-a").plugin == str(a) and plugin_hint(tags) == ""
    reset_plugin_manager()
    moved = tmp_path / "moved.py"
    a.rename(moved)
    with pytest.raises(PluginError, match=rf"^plugin file {re.escape(str(a))} \(recorded in the run's tag "
                                          r"vaekit.plugin_files\): no such file; put it back, or load its new copy "
                                          r"with --plugin FILE.py$"):
        load_run_plugin_files(tags, shown.append)
    load_plugin_file(moved)  # --plugin moved.py: the component is there, the recorded path is not needed
    assert get_component("encoder", "enc-a").plugin == str(moved)


SINE_VOCODER = '''
    import numpy as np
    import vaekit


    def build(audio, freq=300.0):
        def vocode(mel_db):
            t = np.arange(audio.samples) / audio.sr
            return np.stack([np.sin(2 * np.pi * freq * t) for _ in mel_db]).astype(np.float32)

        return vocode


    @vaekit.hookimpl
    def register_vocoders(register):
        register("file-sine", build)
'''


def test_generate_in_a_new_process_loads_the_run_s_plugin_files_only_when_named_or_trusted(
        notebook_data, store, tmp_path, monkeypatch):
    from vaekit.plugins import reset_plugin_manager

    plugin = write(tmp_path / "sine.py", SINE_VOCODER)
    res = cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, *FAST, "--samples", "0",
              "--vocoder", "file-sine", "--option", "vocoder.freq=500")
    assert res.exit_code == 0, res.output
    run_id = res.stdout.split("run id:")[1].split()[0]
    # A later process knows nothing of --plugin: neither the manager nor VAEKIT_PLUGINS has the file.
    reset_plugin_manager()
    monkeypatch.delenv("VAEKIT_PLUGINS")
    gen = ["generate", run_id, "-n", "1", "--no-log", "--tracking-uri", store]
    line = error_line(cli(*gen, "--out", tmp_path / "none"))
    assert line.startswith("Error: unknown vocoder 'file-sine'") and line.endswith(
        f"(the run used plugin file {plugin}, not loaded: name it with --plugin FILE.py, "
        "or pass --trust-run-plugins to import the recorded paths)"), line
    assert not (tmp_path / "none").exists()
    import soundfile as sf

    for how, flags in (("named", ["--plugin", plugin]), ("trusted", ["--trust-run-plugins"])):
        reset_plugin_manager()
        monkeypatch.delenv("VAEKIT_PLUGINS", raising=False)  # --plugin exported it
        res = cli(*gen, "--out", tmp_path / how, *flags)
        assert res.exit_code == 0, res.output
        assert (f"importing the run's plugin files (--trust-run-plugins): {plugin}" in res.stderr) == (how == "trusted")
        [wav] = sorted((tmp_path / how).rglob("*.wav"))
        y, sr = sf.read(wav)
        assert np.argmax(np.abs(np.fft.rfft(y))) * sr / len(y) == pytest.approx(500, abs=2)  # the run's vocoder, its option


def test_a_store_cannot_make_generate_or_resume_run_its_code(notebook_data, store, tmp_path):
    """Anyone who can write to a store can set vaekit.plugin_files and log a file: it must not be imported."""
    from mlflow.tracking import MlflowClient

    res = cli("run", "--data", notebook_data, "--tracking-uri", store, *FAST, "--samples", "0", *QUICK_GRIFFINLIM)
    assert res.exit_code == 0, res.output
    run_id = res.stdout.split("run id:")[1].split()[0]
    marker = tmp_path / "pwned"
    evil = write(tmp_path / "evil.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    MlflowClient(store).set_tag(run_id, "vaekit.plugin_files", json.dumps([str(evil)]))
    # generate, interpolate, reconstruct, resume: each opens the run and reads its tags.
    res = run_cli("generate", run_id, "-n", "1", "--no-log", "--out", tmp_path / "gen", "--tracking-uri", store,
                  "--option", "vocoder.n_iter=2")
    assert res.returncode == 0, res.stderr
    res = run_cli("interpolate", run_id, "--steps", "2", "--no-log", "--out", tmp_path / "int", "--tracking-uri", store,
                  "--option", "vocoder.n_iter=2")
    assert res.returncode == 0, res.stderr
    MlflowClient(store).set_terminated(run_id, "KILLED")
    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr  # no checkpoint to resume; but no import either
    assert not marker.exists(), "a file named by the store's tag was imported"


# -- installed distributions: found through their metadata, named in every error ---------------------

def fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution as pip leaves it: a .dist-info with METADATA and entry_points.txt."""
    info = root / f"{name.replace('-', '_')}-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(f"[vaekit]\n{entry_points}\n")
    for module, code in modules.items():
        write(root / f"{module}.py", code)


def test_installed_distribution_mistakes_name_the_distribution(tmp_path, monkeypatch):
    from vaekit.plugins import reset_plugin_manager

    site_dir = tmp_path / "site"
    fake_distribution(site_dir, "vaekit-good", "good = vaekit_t_good", {"vaekit_t_good": ENCODER_PLUGIN.format(name="dense")})
    monkeypatch.syspath_prepend(str(site_dir))
    assert error_line(cli("plugins")) == ("Error: encoder 'dense' is registered twice: by vaekit.default_plugins.dense "
                                          "and by vaekit-good; rename one of them")

    fake_distribution(tmp_path / "site2", "vaekit-broken", "broken = vaekit_t_broken",
                      {"vaekit_t_broken": "import vaekit\nimport vaekit_t_missing_dependency\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "site2"))
    reset_plugin_manager()
    assert error_line(cli("plugins")) == (
        "Error: plugin 'broken' (entry point vaekit_t_broken of distribution vaekit-broken 1.2): cannot import it: "
        "ModuleNotFoundError: No module named 'vaekit_t_missing_dependency'; fix or uninstall vaekit-broken")
