"""The recipes of ``recipes/`` (issue 21 item 3): each loads, validates and runs through ``vaekit run --config``.

The run is the recipe itself, shrunk only by flags (a few synthetic clips, one epoch, few Griffin-Lim
iterations), so the recipe's resolution, model, loss and their options are what trains.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_every_recipe_validates_with_its_components_and_options():
    from vaekit import components
    from vaekit.config import build_config

    recipes = sorted(RECIPES.glob("*.toml"))
    assert [p.name for p in recipes] == ["hifi.toml"]
    for path in recipes:
        config = build_config(path)  # names, types and ranges of the settings
        components.resolve(config)  # every component exists, every option is one of its component's, in range


def test_hifi_recipe_runs_at_its_resolution_through_vaekit_run(tmp_path, monkeypatch):
    import mlflow

    from vaekit.cli import main
    from vaekit.config import tomllib
    from vaekit.plugins import reset_plugin_manager

    recipe = tomllib.loads((RECIPES / "hifi.toml").read_text())  # read apart from vaekit's own loading
    audio = recipe["options"]["dataset"]
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reset_plugin_manager()
    result = CliRunner().invoke(main, [
        "run", "--config", str(RECIPES / "hifi.toml"), "--tracking-uri", uri, "--epochs", "1", "--samples", "1",
        "--audio-every", "0", "--checkpoint-interval", "0",
        "--metrics", "test_audio_mel_db,test_audio_stft_db", "--option", "dataset.clips=24", "--option", "dataset.speakers=2",
        "--option", "dataset.progress=false", "--option", "vocoder.n_iter=2", "--quiet"])
    reset_plugin_manager()
    assert result.exit_code == 0, (result.output, result.exception)
    run_id = re.search(r"^run id:\s+(\w+)$", result.stdout, re.M).group(1)
    run = mlflow.MlflowClient(uri).get_run(run_id)
    frames = 1 + math.floor(22050 * 1.0 / audio["hop_length"])
    params = run.data.params
    assert params["data.shape"] == f"{audio['n_mels']}x{frames}"
    assert (params["audio.n_fft"], params["audio.hop_length"]) == (str(audio["n_fft"]), str(audio["hop_length"]))
    for key in ("encoder", "decoder", "latent_dim"):
        assert params[key] == str(recipe[key])
    for kind, options in recipe["options"].items():
        for key, value in options.items():
            assert float(params[f"{kind}.{key}"]) == value, (kind, key)
    for name in ("test_audio_mel_db", "test_audio_stft_db"):
        assert math.isfinite(run.data.metrics[name]), name


@pytest.mark.parametrize("broken", ['latent_dim = "sixty-four"', "[options.encoder]\nfilterz = 8", 'encoder = "resconf"'])
def test_a_broken_recipe_is_refused_in_one_line(tmp_path, broken):
    """What the validation test above relies on: a wrong type, option or component name fails it."""
    from vaekit import components
    from vaekit.config import build_config
    from vaekit.errors import VaekitError

    text = (RECIPES / "hifi.toml").read_text()
    key = broken.split("=")[0].split("\n")[-1].strip()
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    if broken.startswith("["):  # a table: append the key to the recipe's own table
        section, entry = broken.split("\n")
        lines.insert(lines.index(section) + 1, entry)
    else:
        lines.insert(0, broken)
    path = tmp_path / "broken.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(VaekitError):
        components.resolve(build_config(path))
