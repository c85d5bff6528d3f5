"""Bad data: each case is a one-line `Error:` naming the file, a non-zero exit, no traceback, no MLflow run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import run_cli


@pytest.fixture(scope="module")
def tracked_store(tmp_path_factory) -> str:
    """One real store with its experiment already made, so 'no run was created' is checked on a live store."""
    from vaekit.tracking import check_store

    where = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{where / 'mlflow.db'}"
    # Artifacts in tmp too: by default they would go to ./mlruns of wherever pytest was started.
    check_store(uri, "vaekit", (where / "mlruns").as_uri())
    return uri



def runs_in(store: str) -> list:
    client = MlflowClient(store)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def copy_data(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def _load(d, name):
    return np.load(d / f"{name}.npy")


# Each case: (id, how to break a copy of good data, which file the error names, what it says).
CASES = [
    ("missing-file", lambda d: (d / "x_test.npy").unlink(), "x_test.npy", "file not found"),
    ("not-3d", lambda d: np.save(d / "x_train.npy", _load(d, "x_train").reshape(-1, 2500)), "x_train.npy",
     r"expected a 3-D array \(N, height, width\), got shape \(96, 2500\)"),
    ("train-test-sizes", lambda d: np.save(d / "x_test.npy", _load(d, "x_test")[:, :, :48]), "data",
     "x_train spectrograms are 50×50 but x_test ones are 50×48"),
    ("nan", lambda d: np.save(d / "x_train.npy", np.where(np.arange(50) == 7, np.nan, _load(d, "x_train"))),
     "x_train.npy", r"NaN or Inf value\(s\), the first in spectrogram 0"),
    ("inf", lambda d: np.save(d / "x_test.npy", np.concatenate([_load(d, "x_test")[:5], np.full((1, 50, 50), np.inf)])),
     "x_test.npy", r"2500 NaN or Inf value\(s\), the first in spectrogram 5"),
    ("out-of-range", lambda d: np.save(d / "x_train.npy", _load(d, "x_train") * 80 - 60), "x_train.npy",
     r"values must be normalised to \[0, 1\], found \[-60, 20\]"),
    ("empty", lambda d: np.save(d / "x_test.npy", np.zeros((0, 50, 50), np.float32)), "x_test.npy",
     r"the array is empty \(shape \(0, 50, 50\)\)"),
    ("object-array", lambda d: np.save(d / "x_train.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True),
     "x_train.npy", "holds Python objects"),
    ("pickled-dict", lambda d: np.save(d / "max_values.npy", {"max": 1.0}, allow_pickle=True), "max_values.npy",
     "holds Python objects"),
    # Complex numbers: casting them to float32 would silently drop the imaginary part (and train on it).
    ("complex", lambda d: np.save(d / "x_train.npy", _load(d, "x_train") * (1 + 0.5j)), "x_train.npy",
     r"holds complex numbers \(complex64\); spectrograms must be real"),
    ("complex-max", lambda d: np.save(d / "max_values.npy", np.complex64(_load(d, "max_values"))), "max_values.npy",
     r"holds complex numbers \(complex64\)"),
    # Bytes that are not a .npy at all (a download that went wrong, another format renamed).
    ("random-bytes", lambda d: (d / "x_test.npy").write_bytes(np.random.default_rng(0).bytes(4096)), "x_test.npy",
     r"not a valid \.npy file \(it does not start with the \.npy magic string"),
    ("min-max-broadcast", lambda d: np.save(d / "min_values.npy", np.zeros(3, np.float32)), "min_values.npy",
     r"shape \(3,\) does not broadcast to the spectrogram size \(50, 50\)"),
    ("bad-dataset-json", lambda d: (d / "dataset.json").write_text("{not json"), "dataset.json", "not valid JSON"),
    ("encoder-size", lambda d: [np.save(d / f"{n}.npy", _load(d, n)[:, :9]) for n in ("x_train", "x_test")], "data",
     r": 9×50 spectrograms do not fit encoder .conv2. \(from vaekit.default_plugins.conv2\): conv2 needs spectrograms of "
     r"at least 10×10 \(mel bands × frames\), got 9×50$"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_a_one_line_error_and_no_run(case, notebook_data, tracked_store, tmp_path):
    from vaekit.cli import main

    name, breaker, file, message = case
    data = copy_data(notebook_data, tmp_path)
    breaker(data)
    result = CliRunner().invoke(main, ["run", "--data", str(data), "--tracking-uri", tracked_store, "--quiet",
                                       "--epochs", "1"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert str(data / file if file != "data" else data) in errors[0]
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert runs_in(tracked_store) == []


def test_data_that_does_not_exist_or_is_not_data(tmp_path, tracked_store):
    from vaekit.cli import main

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    for path, message in ((tmp_path / "nowhere", "no such file or directory"),
                          (tmp_path / "notes", "not a notebook-format directory")):
        result = CliRunner().invoke(main, ["run", "--data", str(path), "--tracking-uri", tracked_store])
        assert result.exit_code == 2 and result.stderr.startswith(f"Error: --data {path}: {message}"), result.stderr
    assert runs_in(tracked_store) == []


def test_cli_subprocess_bad_data_exits_2_without_traceback(notebook_data, tmp_path):
    """The real `vaekit` process: exit code, one `Error:` line, no traceback, and no run in the store."""
    data = copy_data(notebook_data, tmp_path)
    x = _load(data, "x_train")
    x[3, 4, 5] = np.nan
    np.save(data / "x_train.npy", x)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_cli("run", "--data", data, "--tracking-uri", store, cwd=tmp_path, env={"VAEKIT_CACHE": str(tmp_path)})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")] == [
        f"Error: {data / 'x_train.npy'}: 1 NaN or Inf value(s), the first in spectrogram 3"]
    assert not (tmp_path / "mlflow.db").exists() or runs_in(store) == []
