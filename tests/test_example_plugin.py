"""The example package in examples/ installs for real (entry point group ``vaekit``) and runs through ``vaekit run``."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vaekit-example-plugin"


def make_venv(root: Path) -> Path:
    """A throwaway venv that sees this interpreter's packages (vaekit included) and nothing of the example.

    ``--system-site-packages`` only reaches the base interpreter's packages; when the tests run in
    a venv themselves, a .pth file adds that venv's site directories (processing their .pth files,
    so an editable vaekit resolves to the checkout under test).
    """
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
                   check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    # One line, plain calls: a .pth line is exec'd where a comprehension would not see `site`.
    calls = "".join(f"; site.addsitedir({d!r})" for d in dirs)
    Path(purelib, "_vaekit_test_parent.pth").write_text(f"import site{calls}\n")
    where = subprocess.run([python, "-c", "import vaekit; print(vaekit.__file__)"], capture_output=True, text=True)
    import vaekit

    assert where.stdout.strip() == vaekit.__file__, where.stderr  # the vaekit under test, not another install
    return python


def test_example_package_installs_lists_and_runs(notebook_data, store, tmp_path):
    python = make_venv(tmp_path / "venv")
    src = shutil.copytree(EXAMPLE, tmp_path / "src")  # building writes build/ and *.egg-info next to the sources
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for var in ("VAEKIT_PLUGINS", "VAEKIT_NO_ENTRY_POINTS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)

    def vaekit(*args):
        return subprocess.run([python, "-m", "vaekit", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)

    assert "conv1d" not in vaekit("plugins", "--json").stdout  # not there before it is installed
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", src],
                         capture_output=True, text=True, env=env, timeout=300)
    assert pip.returncode == 0, pip.stderr

    listing = vaekit("plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    components = json.loads(listing.stdout)
    for kind in ("encoder", "decoder"):
        [conv1d] = [c for c in components[kind] if c["name"] == "conv1d"]
        assert conv1d["plugin"] == "vaekit-example-plugin" and conv1d["version"] == "0.1.0"
        assert conv1d["options"] == {"filters": 64, "kernel_size": 5, "layers": 2}
        assert conv1d["description"]  # the checkout under test lists descriptions: it is the vaekit in use

    res = vaekit("run", "--data", notebook_data, "--encoder", "conv1d", "--decoder", "conv1d", "--epochs", "1",
                 "--samples", "0", "--option", "encoder.filters=8", "--option", "decoder.filters=8",
                 "--option", "vocoder.n_iter=2", "--latent-dim", "4", "--tracking-uri", store, "--quiet")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.split("run id:")[1].split()[0]
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["encoder"], p["decoder"], p["encoder.plugin"], p["decoder.plugin_version"]) == \
        ("conv1d", "conv1d", "vaekit-example-plugin", "0.1.0")
    assert (p["encoder.filters"], p["encoder.kernel_size"], p["decoder.layers"]) == ("8", "5", "2")
    assert np.isfinite(run.data.metrics["test_mse"])

    # Built from stock Keras layers only: the logged model loads here, where the example is not installed.
    import mlflow

    import vaekit.model  # noqa: F401  registers vaekit's own classes

    mlflow.set_tracking_uri(store)
    vae = mlflow.keras.load_model(mlflow.get_run(run_id).data.tags["vaekit.model_uri"])
    assert vae.decode(np.zeros((2, 4), dtype="float32")).shape == (2, 50, 50, 1)
