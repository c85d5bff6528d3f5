"""`vaekit prepare`: real audio files in, notebook-format data out; bad files skipped; nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import restore_sigint, run_cli, tiny_config
from vaekit.audio import AudioParams
from vaekit.data import load_notebook_dir
from vaekit.prepare import audio_params, prepare_folder

FORMATS = ("wav", "flac", "ogg")
RATES = (8000, 16000, 22050, 44100, 48000)



def tone(freq: float, sr: int, seconds: float, stereo: bool = False) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-2 * t)).astype(np.float32)
    return np.stack([y, 0.5 * y], axis=1) if stereo else y


def make_audio_tree(root: Path, speakers: int = 4, per_speaker: int = 6, bad: bool = True) -> Path:
    """AudioMNIST layout (``01/3_01_2.wav``): mixed formats, sample rates, lengths, stereo; plus bad files."""
    rng = np.random.default_rng(0)
    k = 0
    for s in range(1, speakers + 1):
        spk = f"{s:02d}"
        (root / spk).mkdir(parents=True, exist_ok=True)
        for i in range(per_speaker):
            sr, fmt = RATES[k % len(RATES)], FORMATS[k % len(FORMATS)]
            y = tone(rng.uniform(150, 1500), sr, rng.uniform(0.4, 1.6), stereo=k % 4 == 0)
            sf.write(root / spk / f"{i % 10}_{spk}_{i}.{fmt}", y, sr)
            k += 1
    if bad:
        (root / "01" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
        sf.write(root / "02" / "empty.flac", np.zeros(0, np.float32), 22050)
        (root / "02" / "readme.txt").write_text("not audio")
    return root


def test_prepare_audiomnist_tree_by_speaker(tmp_path):
    import librosa

    src = make_audio_tree(tmp_path / "audio")
    # One 22050 Hz mono file the plain librosa path must reproduce, one 44.1 kHz stereo 440 Hz tone.
    ref = tone(300, 22050, 0.6)
    sf.write(src / "03" / "9_03_9.wav", ref, 22050)
    sf.write(src / "04" / "9_04_9.flac", tone(440, 44100, 1.2, stereo=True), 44100)
    out = tmp_path / "prepared"
    s = prepare_folder(src, out, split_by="speaker", workers=1, progress=False)

    assert s.files == 28 and s.train + s.test == 26 and s.shape == (50, 50)
    assert [(x["file"], x["reason"].split(" ")[0]) for x in s.skipped] == [("01/corrupt.wav", "unreadable"),
                                                                           ("02/empty.flac", "empty")]
    ds = load_notebook_dir(out)
    assert ds.x_train.shape == (s.train, 50, 50) and ds.x_test.shape == (s.test, 50, 50)
    assert ds.audio == AudioParams()
    both = np.concatenate([ds.x_train, ds.x_test])
    assert both.min() == pytest.approx(0) and both.max() == pytest.approx(1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"] == str(src.resolve()) and meta["split"]["by"] == "speaker"
    assert meta["skipped"] == s.skipped
    train_spk = {f.split("/")[0] for f in meta["train_files"]}
    test_spk = {f.split("/")[0] for f in meta["test_files"]}
    assert train_spk and test_spk and not train_spk & test_spk and train_spk | test_spk == {"01", "02", "03", "04"}
    assert len(meta["train_files"]) == s.train and len(meta["test_files"]) == s.test
    assert not list(tmp_path.glob(".*partial*"))

    def row(name):
        x, files = (ds.x_train, meta["train_files"]) if name in meta["train_files"] else (ds.x_test, meta["test_files"])
        return ds.denormalize(x[files.index(name)])

    ref, _ = sf.read(src / "03" / "9_03_9.wav", dtype="float32")  # as stored (16-bit PCM)
    expected = librosa.power_to_db(librosa.feature.melspectrogram(
        y=librosa.util.fix_length(ref, size=22050), sr=22050, n_fft=2048, hop_length=442, n_mels=50))
    np.testing.assert_allclose(row("03/9_03_9.wav"), expected, atol=2e-3)
    stereo = row("04/9_04_9.flac")
    centres = librosa.mel_frequencies(n_mels=52, fmax=11025)[1:-1]
    assert abs(centres[np.argmax(stereo[:, :20].mean(axis=1))] - 440) < 40


def test_random_split_is_seeded_75_25_and_workers_do_not_change_the_result(tmp_path):
    src = make_audio_tree(tmp_path / "audio", speakers=5, per_speaker=30, bad=False)
    one = prepare_folder(src, tmp_path / "one", workers=1, progress=False)
    two = prepare_folder(src, tmp_path / "two", workers=2, progress=False)
    other_seed = prepare_folder(src, tmp_path / "seed1", workers=1, seed=1, progress=False)
    assert (one.train, one.test) == (112, 38)  # round(150 · 0.25) = 38 in test
    assert (two.train, two.test) == (other_seed.train, other_seed.test) == (112, 38)
    for name in ("x_train", "x_test", "min_values", "max_values"):
        np.testing.assert_array_equal(np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "two" / f"{name}.npy"))
    m1, m2 = (json.loads((tmp_path / d / "dataset.json").read_text()) for d in ("one", "seed1"))
    assert m1["test_files"] != m2["test_files"] and sorted(m1["test_files"] + m1["train_files"]) == sorted(
        m2["test_files"] + m2["train_files"])


def test_cli_prepare_summary_force_and_refusals(tmp_path):
    from vaekit.cli import main

    src = make_audio_tree(tmp_path / "audio", speakers=2, per_speaker=4)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(main, ["prepare", str(src), str(out), "--quiet", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "prepared 8 clips (50×50) from 10 files" in res.stdout and "6 train, 2 test" in res.stdout
    assert "skipped 2 file(s)" in res.stdout and "01/corrupt.wav: unreadable" in res.stdout
    assert "02/empty.flac: empty (0 bytes)" in res.stdout
    assert "01/corrupt.wav: unreadable (Error in WAV file" in res.stdout
    before = (out / "x_train.npy").read_bytes()

    res = runner.invoke(main, ["prepare", str(src), str(out), "--quiet", "--n-mels", "42"])
    assert res.exit_code == 2 and res.stderr == f"Error: {out}: already exists; pass --force to replace it\n"
    assert (out / "x_train.npy").read_bytes() == before

    res = runner.invoke(main, ["prepare", str(src), str(out), "--quiet", "--n-mels", "42", "--force"])
    assert res.exit_code == 0, res.output
    assert np.load(out / "x_train.npy").shape[1:] == (42, 50)
    assert json.loads((out / "dataset.json").read_text())["audio"]["n_mels"] == 42

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    res = runner.invoke(main, ["prepare", str(src), str(precious), "--quiet", "--force"])
    assert res.exit_code == 2 and "does not hold a dataset; not replacing it" in res.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"

    (tmp_path / "silent").mkdir()
    (tmp_path / "silent" / "notes.txt").write_text("x")
    res = runner.invoke(main, ["prepare", str(tmp_path / "silent"), str(tmp_path / "o2"), "--quiet"])
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path / 'silent'}: no audio files (.wav, .flac, .ogg) in this folder tree\n"

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.wav").write_bytes(b"nope")
    (tmp_path / "broken" / "b.ogg").write_bytes(b"")
    res = runner.invoke(main, ["prepare", str(tmp_path / "broken"), str(tmp_path / "o3"), "--quiet"])
    assert res.exit_code == 2 and res.stderr.startswith(
        f"Error: {tmp_path / 'broken'}: none of the 2 audio file(s) could be used; first: a.wav: unreadable")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*old*"))


def test_a_fifo_among_the_audio_is_skipped_as_not_a_regular_file_without_blocking(tmp_path):
    """A named pipe called .wav: opening it to read would wait for a writer forever; its size (0) is no
    reason to call it empty. A symlink to a real clip is still a clip."""
    src = make_audio_tree(tmp_path / "audio", speakers=2, per_speaker=4, bad=False)
    os.mkfifo(src / "01" / "live.wav")
    os.symlink(next((src / "02").glob("*.wav")), src / "02" / "linked.wav")
    out = tmp_path / "out"
    res = run_cli("prepare", src, out, "--workers", "1", cwd=tmp_path, timeout=120)  # a block is a timeout
    assert res.returncode == 0, res.stderr[-3000:]
    assert "01/live.wav: not a regular file (a FIFO)" in res.stdout, res.stdout
    assert "prepared 9 clips" in res.stdout and "skipped 1 file(s)" in res.stdout, res.stdout
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["skipped"] == [{"file": "01/live.wav", "reason": "not a regular file (a FIFO)"}]
    assert "02/linked.wav" in meta["train_files"] + meta["test_files"]


def test_interrupted_prepare_leaves_no_dataset(tmp_path):
    """Ctrl-C in the middle: exit 130, no OUT_DIR, no partial directory left, no traceback.

    "In the middle" by synchronisation, not by timing: once the partial directory exists, the process is
    stopped (SIGSTOP) before it is checked to be still running and sent SIGINT, then continued; however fast
    the machine, it cannot finish in between."""
    src = tmp_path / "audio"
    src.mkdir()
    y = tone(220, 48000, 1.5, stereo=True)
    for i in range(400):
        sf.write(src / f"{i:03d}.flac", y, 48000)
    out = tmp_path / "out"
    env = {**os.environ, "VAEKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "prepare", str(src), str(out), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=restore_sigint)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        assert proc.poll() is None and not out.exists(), "prepare finished before it could be interrupted"
        assert list(tmp_path.glob(".out.partial-*")), "prepare wrote no partial directory within 300 s"
        proc.send_signal(signal.SIGINT)  # pending until it runs again
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130, (stdout, stderr)
    assert "Interrupted." in stderr and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_run_trains_on_prepared_data_and_vocodes_at_its_sample_rate(tmp_path, store):
    from vaekit.commands.run import run

    src = make_audio_tree(tmp_path / "audio", speakers=4, per_speaker=20, bad=False)
    out = tmp_path / "prepared"
    prepare_folder(src, out, audio_params(sr=16000, n_mels=42), split_by="speaker", workers=1, progress=False)
    result = run(tiny_config(out, store), progress=False)
    client = MlflowClient(store)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED" and r.data.params["dataset"] == "notebook"
    assert r.data.params["audio.sr"] == "16000" and r.data.params["audio.hop_length"] == "321"
    assert r.data.params["data.shape"] == "42x50" and r.data.params["data.train"] == "60"
    y, sr = sf.read(client.download_artifacts(result.run_id, "samples/sample_00.wav"))
    assert sr == 16000 and y.shape == (16000,)


def test_run_data_audio_folder_prepares_into_the_cache_once(tmp_path, vaekit_cache):
    from vaekit.components import load_dataset, resolve
    from vaekit.config import RunConfig

    src = make_audio_tree(tmp_path / "audio", speakers=2, per_speaker=4)
    config = RunConfig(data=str(src), options={"dataset": {"progress": False}})
    comps = resolve(config)
    assert comps["dataset"].name == "audio-folder"
    ds = load_dataset(config, comps)
    where = Path(ds.source)
    assert where.parent == vaekit_cache / "prepared" and where.name.startswith("audio-")
    assert len(ds.x_train) + len(ds.x_test) == 8 and len(ds.info["skipped"]) == 2
    stamp = (where / "x_train.npy").stat().st_mtime_ns
    assert load_dataset(config, comps).source == ds.source and (where / "x_train.npy").stat().st_mtime_ns == stamp
    f = next(src.glob("01/*.wav"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # an edited file: prepared again
    assert load_dataset(config, comps).source != ds.source
    assert len(list((vaekit_cache / "prepared").iterdir())) == 2


def test_cli_subprocess_prepare_errors_exit_2_without_traceback(tmp_path):
    (tmp_path / "silent").mkdir()
    res = run_cli("prepare", tmp_path / "silent", tmp_path / "out", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'silent'}: no audio files (.wav, .flac, .ogg) in this folder tree")
    assert not (tmp_path / "out").exists()


def test_run_on_a_folder_of_unusable_audio_is_an_error_and_no_run(tmp_path, store):
    from vaekit.cli import main

    bad = tmp_path / "recordings"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"RIFF....WAVEfmt ")
    (bad / "b.flac").write_bytes(b"")
    res = CliRunner().invoke(main, ["run", "--data", str(bad), "--tracking-uri", store, "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.splitlines()[-1].startswith(f"Error: {bad}: none of the 2 audio file(s) could be used; first: a.wav")
    assert not (tmp_path / "mlflow.db").exists() or MlflowClient(store).search_runs(["0"]) == []
