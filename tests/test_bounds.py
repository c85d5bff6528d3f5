"""Accepted values stay bounded (issue 16, item 4): option ranges, a cheap pre-flight, samples in batches, huge --epochs.

Real parts: the CLI (in-process with CliRunner, or a real ``vaekit run`` subprocess), a real sqlite
MLflow store in tmp_path, real Keras training on the tiny notebook data, peak memory read from /proc.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from conftest import docs_page, error_line, runs_in
from vaekit.cli import main

FAST = ["--encoder", "dense", "--decoder", "dense", "--option", "encoder.units=32", "--option", "decoder.units=32",
        "--epochs", "1", "--samples", "1", "--batch-size", "48", "--quiet"]


@pytest.fixture(autouse=True)
def restore_vaekit_plugins(monkeypatch):
    """``--plugin`` exports VAEKIT_PLUGINS for child processes; undo that after each test."""
    monkeypatch.setenv("VAEKIT_PLUGINS", "")
    monkeypatch.delenv("VAEKIT_PLUGINS")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


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


def test_out_of_range_vocoder_option_is_refused_by_generate_too(notebook_run, tmp_path):
    """``vaekit generate --option vocoder.n_iter=...`` is checked against the same range, before any file."""
    run_id, store = notebook_run  # a griffinlim run; refused before anything is written or logged
    out = tmp_path / "gen"
    res = cli("generate", run_id, "--tracking-uri", store, "--out", out, "--no-log",
              "--option", "vocoder.n_iter=0")
    assert error_line(res) == ("Error: --option vocoder.n_iter=0: out of range; vocoder 'griffinlim' takes "
                               "1 ≤ n_iter ≤ 10000")
    assert not out.exists()


def docs_tutorial() -> tuple[str, str, str]:
    """The tutorial plugin of docs/plugins.md (file name, code) and the error line its example shows."""
    section = docs_page("plugins.md")
    filename, code = re.search(r"<!-- tutorial: (\S+) -->\n```python\n(.*?)```", section, re.S).groups()
    shown = re.search(r"--option encoder.units=0\n# (Error: .*)\n", section).group(1)
    return filename, code, shown


def test_a_plugin_file_declares_ranges_as_the_docs_show(notebook_data, store, tmp_path):
    filename, code, shown = docs_tutorial()
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


# -- memory that does not grow with what was asked for -------------------------------------------

# fastgl at its cheapest: the subject is how many spectrograms are held, not the audio's quality.
CHEAP_VOCODER = ["--vocoder", "fastgl", "--option", "vocoder.n_iter=1", "--option", "vocoder.nnls_iter=1"]
MIB = 1024 * 1024


# Runs ``vaekit ARGS`` in a child of a fresh interpreter and prints the child's peak resident memory
# (ru_maxrss of its only child, in KiB): exact, and not mixed with other children pytest has reaped.
# The child first sets the batch sizes to $VAEKIT_TEST_BATCH: with small batches, a few batches' worth of
# memory is small beside what holding every sample would take, so the test tells the two apart quickly.
CHILD = """
import os, sys
import vaekit.commands.generate, vaekit.runlog
vaekit.runlog.SAMPLE_BATCH = vaekit.commands.generate.BATCH = int(os.environ["VAEKIT_TEST_BATCH"])
from vaekit.cli import main
main(sys.argv[1:])
"""
MEASURE = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
if proc.returncode:
    sys.exit(proc.stderr[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mib(args, cwd, batch: int) -> float:
    """Peak resident memory of ``vaekit ARGS`` in MiB, sampling in batches of ``batch`` (must succeed)."""
    res = subprocess.run([sys.executable, "-c", MEASURE, CHILD, *map(str, args)], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "VAEKIT_TEST_BATCH": str(batch)},
                         timeout=600)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1]) / 1024


def test_samples_are_decoded_vocoded_and_written_in_bounded_batches(notebook_data, store, tmp_path):
    """``vaekit run --samples N`` and ``vaekit generate -n N``: peak memory does not grow with N.

    Before, every spectrogram, waveform and re-analysed STFT of the N samples was held at once
    (``--samples 100000`` reached 4 GB in 2 minutes; 16 → 512 samples: 1180 → 1636 MiB, 0.9 MiB a
    sample).  Measured with batches of 8: N=64 (8 batches) against N=192 (24), the same run
    otherwise; 128 more samples held at once would be over 100 MiB more.  The files are still one
    WAV and one PNG per sample, numbered across batches.
    """
    from vaekit.commands.generate import BATCH
    from vaekit.runlog import SAMPLE_BATCH

    assert SAMPLE_BATCH == BATCH == 64  # what users get; the test shrinks it, below
    # small ≥ GRID_MAX: both grids hold 64 spectrograms (a figure of 32 against one of 64 differs by ~40 MiB).
    batch, small, large = 8, 64, 192
    common = ["run", "--data", notebook_data, "--tracking-uri", store, *FAST[:10], "--batch-size", "48", "--quiet",
              *CHEAP_VOCODER]
    run_small = peak_rss_mib([*common, "--samples", small], tmp_path, batch)
    run_large = peak_rss_mib([*common, "--samples", large], tmp_path, batch)
    first, second = sorted(runs_in(store), key=lambda r: r.info.start_time)
    artifacts = {f.path for f in mlflow.MlflowClient(store).list_artifacts(second.info.run_id, "samples")}
    assert artifacts == {f"samples/sample_{i:02d}.{ext}" for i in range(large) for ext in ("wav", "png")}

    gen = ["generate", first.info.run_id, "--tracking-uri", store, "--no-log"]
    gen_small = peak_rss_mib([*gen, "-n", small, "--out", tmp_path / "small"], tmp_path, batch)
    gen_large = peak_rss_mib([*gen, "-n", large, "--out", tmp_path / "large"], tmp_path, batch)
    out = tmp_path / "large" / "seed_0"
    assert {p.name for p in (out / "fastgl").glob("*.wav")} == {f"sample_{i:02d}.wav" for i in range(large)}
    assert len(list(out.glob("sample_*.png"))) == large and (out / "grid.png").is_file()

    print(f"peak RSS, MiB: run --samples {small}: {run_small:.0f}, {large}: {run_large:.0f}; "
          f"generate -n {small}: {gen_small:.0f}, {large}: {gen_large:.0f}")
    assert run_large - run_small < 50, (run_small, run_large)
    assert gen_large - gen_small < 50, (gen_small, gen_large)


def test_a_huge_epochs_value_starts_training_at_once_with_bounded_memory(notebook_data, store, tmp_path):
    """``--epochs 1000000000000`` is a legitimate "until I stop it": the first epoch must come, in little memory.

    Before, every epoch's visiting order was built before training (6.5 GB resident, no epoch ran);
    each epoch's order is now made when that epoch starts.  A real run is stopped with SIGTERM once
    its first epoch's metrics are in the store; its peak memory (VmHWM) is read from /proc first.
    """
    args = ["run", "--data", notebook_data, "--tracking-uri", store, *FAST[:8], "--epochs", "1000000000000",
            "--batch-size", "48", "--samples", "0", "--quiet", "--checkpoint-interval", "600"]
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, args)], cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a generous bound for a loaded machine: the test waits on state
        history = []
        while not history and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            history = logged_losses(store)
        status = Path(f"/proc/{proc.pid}/status").read_text() if proc.poll() is None else ""
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    assert history, f"no epoch finished (exit {proc.returncode}): {err[-2000:]}"
    assert history[0] == 0  # the first epoch (steps are 0-based epochs), not some later one
    peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024
    # A one-epoch run of this model peaks near 1.2 GiB here (TensorFlow itself); the orders of 10¹² epochs were 6.5 GB.
    assert peak < 2500, f"peak RSS {peak:.0f} MiB"
    assert proc.returncode == 143, err[-2000:]  # SIGTERM: the run ends KILLED, as for any long run stopped
    [run] = runs_in(store)
    assert run.info.status == "KILLED"


def logged_losses(store: str) -> list[int]:
    """The steps of every ``loss`` metric in the store, read-only: an MlflowClient here would race the
    run's own creation of MLflow's tables (both would create them)."""
    import sqlite3

    from vaekit.tracking import sqlite_path

    path = sqlite_path(store)
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return [step for (step,) in db.execute("SELECT step FROM metrics WHERE key = 'loss' ORDER BY step")]
    except sqlite3.OperationalError:  # the tables are not there yet, or the store is locked a moment
        return []
