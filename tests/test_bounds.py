"""Accepted values stay bounded (issue 16, item 4): option ranges, a cheap pre-flight, samples in batches, huge --epochs.

Real parts: the CLI (in-process with CliRunner, or a real ``vaekit run`` subprocess), a real sqlite
MLflow store in tmp_path, real Keras training on the tiny notebook data, peak memory read from /proc.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaekit.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
FAST = ["--encoder", "dense", "--decoder", "dense", "--option", "encoder.units=32", "--option", "decoder.units=32",
        "--epochs", "1", "--samples", "1", "--batch-size", "48", "--quiet"]


@pytest.fixture(autouse=True)
def restore_vaekit_plugins(monkeypatch):
    """``--plugin`` exports VAEKIT_PLUGINS for child processes; undo that after each test."""
    monkeypatch.setenv("VAEKIT_PLUGINS", "")
    monkeypatch.delenv("VAEKIT_PLUGINS")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The one ``Error:`` line of a command that failed cleanly: exit 2, no traceback, nothing after it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith(lines[0] + "\n"), result.stderr
    return lines[0]


def runs_in(store: str) -> list:
    from mlflow.tracking import MlflowClient

    from vaekit.tracking import sqlite_path

    if not sqlite_path(store).exists():
        return []
    client = MlflowClient(store)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


# -- option ranges -------------------------------------------------------------------------------

OUT_OF_RANGE = {
    # The reports: -1 was accepted, 1e9 hung the pre-flight check, NaN failed at batch 1.
    "n_iter=-1": (["--option", "vocoder.n_iter=-1"],
                  "--option vocoder.n_iter=-1: out of range; vocoder 'griffinlim' takes 1 ≤ n_iter ≤ 10000"),
    "n_iter=1e9": (["--option", "vocoder.n_iter=1e9"],
                   "--option vocoder.n_iter=1000000000: out of range; vocoder 'griffinlim' takes 1 ≤ n_iter ≤ 10000"),
    "fastgl-batch_size=0": (["--vocoder", "fastgl", "--option", "vocoder.batch_size=0"],
                            "--option vocoder.batch_size=0: out of range; vocoder 'fastgl' takes "
                            "1 ≤ batch_size ≤ 65536"),
    "lambda=nan": (["--option", "loss.lambda=nan"],
                   "--option loss.lambda=nan: not a finite number; loss 'mse-kl' takes lambda ≥ 0, finite"),
    "lambda=inf": (["--option", "loss.lambda=inf"],
                   "--option loss.lambda=inf: not a finite number; loss 'mse-kl' takes lambda ≥ 0, finite"),
    "lambda=-1": (["--option", "loss.lambda=-1"],
                  "--option loss.lambda=-1.0: out of range; loss 'mse-kl' takes lambda ≥ 0, finite"),
    "warmup_epochs=-1": (["--loss", "kl-warmup", "--option", "loss.warmup_epochs=-1"],
                         "--option loss.warmup_epochs=-1: out of range; loss 'kl-warmup' takes warmup_epochs ≥ 0"),
    "momentum=nan": (["--option", "vocoder.momentum=nan"],
                     "--option vocoder.momentum=nan: not a finite number; vocoder 'griffinlim' takes "
                     "0 ≤ momentum ≤ 1"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_out_of_range_options_are_refused_in_one_line_before_any_run(case, notebook_data, store):
    args, message = OUT_OF_RANGE[case]
    res = cli("run", "--data", notebook_data, "--tracking-uri", store, *FAST, *args)
    assert error_line(res) == f"Error: {message}"
    assert runs_in(store) == []


def test_out_of_range_vocoder_option_is_refused_by_generate_too(notebook_data, store):
    """``vaekit generate --option vocoder.n_iter=...`` is checked against the same range, before any file."""
    res = cli("run", "--data", notebook_data, "--tracking-uri", store, *FAST, "--option", "vocoder.n_iter=2")
    assert res.exit_code == 0, res.output
    [run] = runs_in(store)
    out = Path(store.removeprefix("sqlite:///")).parent / "gen"
    res = cli("generate", run.info.run_id, "--tracking-uri", store, "--out", out, "--no-log",
              "--option", "vocoder.n_iter=0")
    assert error_line(res) == ("Error: --option vocoder.n_iter=0: out of range; vocoder 'griffinlim' takes "
                               "1 ≤ n_iter ≤ 10000")
    assert not out.exists()


def readme_tutorial() -> tuple[str, str, str]:
    """The README's tutorial plugin (file name, code) and the error line its example shows."""
    text = README.read_text()
    section = text[text.index("\n## Write a plugin\n"):]
    filename, code = re.search(r"<!-- tutorial: (\S+) -->\n```python\n(.*?)```", section, re.S).groups()
    shown = re.search(r"--option encoder.units=0\n# (Error: .*)\n", section).group(1)
    return filename, code, shown


def test_a_plugin_file_declares_ranges_as_the_readme_shows(notebook_data, store, tmp_path):
    filename, code, shown = readme_tutorial()
    assert 'options={"units": {"min": 1, "max": 4096}}' in code
    plugin = tmp_path / filename
    plugin.write_text(code)
    listing = cli("plugins", "--plugin", plugin)
    assert listing.exit_code == 0, listing.output
    assert re.search(r"gru .*\n.*\n\s+options: units=32\n\s+ranges: 1 ≤ units ≤ 4096\n", listing.stdout)
    res = cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, *FAST,
              "--encoder", "gru", "--option", "encoder.units=0")
    assert error_line(res) == shown
    assert runs_in(store) == []


BAD_DECLARATIONS = {
    "not-an-option": ('{"unit": {"min": 1}}', "options= names 'unit', which is not an option of its build "
                                              "function; its options are: units"),
    "default-outside": ('{"units": {"min": 64}}', "the default units=32 is outside its own range (units ≥ 64)"),
    "unknown-key": ('{"units": {"minimum": 1}}', "option 'units': unknown range key(s) minimum; keys are: "
                                                 "min, max, above, below, finite, choices"),
}


@pytest.mark.parametrize("case", BAD_DECLARATIONS)
def test_a_malformed_range_declaration_is_the_plugin_s_error(case, tmp_path):
    ranges, message = BAD_DECLARATIONS[case]
    plugin = tmp_path / "ranged.py"
    plugin.write_text(textwrap.dedent(f"""
        import vaekit

        def build(input_shape, latent_dim, units=32):
            raise AssertionError("never built: listing only")

        @vaekit.hookimpl
        def register_encoders(register):
            register("ranged", build, options={ranges})
    """))
    line = error_line(cli("plugins", "--plugin", plugin))
    assert line == f"Error: {plugin.resolve()}: encoder 'ranged': {message}"


def test_plugins_json_shows_every_option_s_range():
    res = cli("plugins", "--json")
    assert res.exit_code == 0, res.output
    listing = {kind: {c["name"]: c for c in comps} for kind, comps in json.loads(res.stdout).items()}
    assert listing["vocoder"]["griffinlim"]["ranges"]["n_iter"] == {"min": 1, "max": 10000, "finite": True}
    assert listing["vocoder"]["fastgl"]["ranges"]["batch_size"] == {"min": 1, "max": 65536, "finite": True}
    assert listing["loss"]["mse-kl"]["ranges"] == {"lambda": {"min": 0, "finite": True}}
    assert listing["dataset"]["audio-folder"]["ranges"]["split_by"] == {"finite": True,
                                                                        "choices": ["random", "speaker"]}
    assert listing["dataset"]["synthetic"]["ranges"]["test_fraction"] == {"above": 0, "below": 1, "finite": True}
    # Every built-in option is bounded (a free string or flag aside): nothing numeric goes unchecked.
    for kind, comps in listing.items():
        for name, comp in comps.items():
            for key, default in comp["options"].items():
                if isinstance(default, (int, float)) and not isinstance(default, bool):
                    assert key in comp["ranges"], f"{kind} {name!r} option {key!r} has no range"


# -- the pre-flight check --------------------------------------------------------------------------

def test_the_preflight_check_costs_the_same_whatever_n_iter(notebook_data):
    """The dummy spectrogram is vocoded by an instance built with the plugin's ``preflight`` options.

    The run's own instance (here n_iter=10000: 23 s for griffinlim's check before) must not be the
    one called; the real griffinlim is, with n_iter=1.
    """
    from vaekit import components
    from vaekit.audio import AudioParams
    from vaekit.data import load_notebook_dir

    ds = load_notebook_dir(notebook_data, AudioParams())
    comp = components.get_component("vocoder", "griffinlim")
    built = []
    real_build = comp.build

    @functools.wraps(real_build)  # the same signature: the same options
    def spy(audio, **options):
        built.append(options)
        return real_build(audio, **options)

    comp.build = spy

    def the_runs_instance(mel_db):
        raise AssertionError("the pre-flight vocoded with the run's n_iter=10000")

    components.check_vocoder(comp, the_runs_instance, ds, {"n_iter": 10000})
    assert built == [{"n_iter": 1}]
