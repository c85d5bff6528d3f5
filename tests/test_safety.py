"""Nothing lost and nothing unbounded on export, register, reconstruct, explore and the logged models (issue 22).

One tiny finished run (dense encoder and decoder, module-scoped) is shared by the module; every
command runs for real (the CLI in-process, or a real process where the failure needs one) against a
real sqlite MLflow store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import error_line, tiny_run

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
