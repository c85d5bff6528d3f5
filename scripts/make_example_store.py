#!/usr/bin/env python
"""Regenerate ``mlruns.example/``: a small real tracking store that ``vaekit ui mlruns.example`` opens anywhere.

It starts a temporary ``mlflow server`` with served artifacts on the new store
(``OUT/mlflow.db`` + ``OUT/artifacts/``) and runs the real ``vaekit`` CLI against it, so every
artifact location is recorded as an ``mlflow-artifacts:`` URI: relative to whichever server
serves the folder, hence valid after the folder moves or is cloned.

Two runs of the same small conv2 network that differ only in ``loss.lambda`` (so MLflow's
compare view has something to show), then ``vaekit generate`` and ``vaekit interpolate`` on the
first.  Sizes: the full conv2 pair is ~20 MB of float32 weights (~60 MB with Adam's state, which
the .keras file keeps), so both runs shrink the dense layers (``dense1``) to stay well under 25 MB.

    python scripts/make_example_store.py                 # the default dataset
    python scripts/make_example_store.py --data DIR      # notebook-format data or a folder of audio
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Both runs: a conv2 VAE with 64-unit dense layers instead of 800 (about 0.4 M parameters, not 5 M).
SMALL = ["--option", "encoder.dense1=64", "--option", "decoder.dense1=64"]
RUNS = [("lambda-500", ["--option", "loss.lambda=500"]), ("lambda-2000", ["--option", "loss.lambda=2000"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow server did not answer {url} within {timeout} s")


def vaekit(*args: str) -> str:
    print("+ vaekit", " ".join(args), flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "vaekit", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"vaekit {args[0]} failed with {out.returncode}")
    print(out.stdout, flush=True)
    return out.stdout


def check_relative(db: Path) -> None:
    """Every recorded artifact location must be an mlflow-artifacts: URI (no absolute paths)."""
    con = sqlite3.connect(db)
    try:
        rows = [r[0] for r in con.execute("SELECT artifact_uri FROM runs")]
        rows += [r[0] for r in con.execute("SELECT artifact_location FROM experiments")]
        rows += [r[0] for r in con.execute("SELECT artifact_location FROM logged_models")]
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    bad = [r for r in rows if not str(r).startswith("mlflow-artifacts:")]
    if bad:
        raise SystemExit(f"absolute artifact locations recorded: {bad[:3]}")


def make(out: Path, data: str | None, epochs: int, samples: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".example-", dir=out.parent))
    work.chmod(0o755)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(work / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=work, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_for(f"{uri}/health", server)
        common = ["--tracking-uri", uri, "--epochs", str(epochs), "--samples", str(samples), "--quiet", *SMALL]
        if data:
            common += ["--data", data]
        run_ids = []
        for name, extra in RUNS:
            stdout = vaekit("run", "--run-name", name, *common, *extra)
            run_ids.append(next(line.split()[-1] for line in stdout.splitlines() if line.startswith("run id:")))
        vaekit("generate", run_ids[0], "-n", "4", "--tracking-uri", uri)
        vaekit("interpolate", run_ids[0], "--seeds", "0", "1", "--steps", "6", "--tracking-uri", uri)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    check_relative(work / "mlflow.db")
    for stray in work.glob("mlflow.db.*"):
        stray.unlink()
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(list(out.rglob('*.wav')))} WAVs, {len(list(out.rglob('*.png')))} PNGs, {size / 1e6:.1f} MB")
    if size > 25e6:
        raise SystemExit(f"{out} is {size / 1e6:.1f} MB, over the 25 MB budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data for both runs [the default dataset]")
    parser.add_argument("--out", default=str(ROOT / "mlruns.example"), help="store folder [mlruns.example]")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    make(Path(args.out).resolve(), args.data, args.epochs, args.samples)


if __name__ == "__main__":
    main()
