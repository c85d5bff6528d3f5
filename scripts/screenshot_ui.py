#!/usr/bin/env python
"""Retake ``docs/images/mlflow-ui.png``: the MLflow runs table on two real vaekit runs, in headless Chromium.

Two tiny real ``vaekit run``s (a small conv2 VAE on 240 synthetic clips, 3 epochs) that differ only in
``loss.lambda`` go into a new store in a temporary directory; ``vaekit ui`` serves it; Chromium opens the
runs table, the script closes MLflow's assistant panel and picks the columns worth seeing (test metrics,
``loss.lambda``), and saves the screenshot. Look at the PNG before committing it.

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``) and ``pip install websocket-client``
(to drive it over the DevTools protocol: clicking is what picks MLflow's columns). About 2 minutes on 2 cores.

    python scripts/screenshot_ui.py [--out docs/images/mlflow-ui.png] [--store DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--option", "dataset.clips=240", "--epochs", "3", "--samples", "2", "--latent-dim", "8", "--option", "encoder.dense1=64",
        "--option", "decoder.dense1=64", "--option", "vocoder.n_iter=8", "--quiet"]
#: Columns toggled in MLflow's column picker, in order: off for the first two (shown by default), on for the rest.
COLUMNS = ["Dataset", "Source", "loss.lambda", "latent_dim", "test_mse", "test_kl", "test_loss", "vocoder_mel_error_db"]
PICK_COLUMNS = """(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const columns = () => [...document.querySelectorAll("button")].find(b => b.textContent.trim() == "Columns");
  for (let i = 0; i < 240 && !(columns() && document.body.textContent.includes("matching runs")); i++) await sleep(500);
  await sleep(2000);
  const close = document.querySelector("button[aria-label=Close]");  // the MLflow Assistant side panel
  if (close) close.click();
  columns().click();
  await sleep(1500);
  const picker = () => {  // looked up each time: the picker re-renders when the run's metric and param names arrive
    let box = document.querySelector("input[placeholder='Search columns']");
    while (box && !box.textContent.includes("Attributes")) box = box.parentElement;
    return box || document.createElement("div");
  };
  const found = [];
  for (const name of COLUMNS) {
    const find = () => [...picker().querySelectorAll("span,div,label")].find(e => e.children.length == 0 && e.textContent.trim() == name);
    for (let i = 0; i < 40 && !find(); i++) await sleep(250);
    if (find()) { find().click(); found.push(name); await sleep(300); }
  }
  document.body.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", bubbles: true}));
  document.querySelector("h1, h2").click();
  await sleep(1500);
  return found;
})()""".replace("COLUMNS", json.dumps(COLUMNS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 180) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.load(answer) if url.endswith("/json") else None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout} s") from None
            time.sleep(1)


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A process in its own group, so that stopping it stops its children (mlflow server's workers)."""
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def screenshot(url: str, out: Path, width: int, height: int, profile: Path) -> list[str]:
    """Open url in headless Chromium, pick the columns, write the PNG; the columns found."""
    import websocket  # websocket-client

    port = free_port()
    browser = start(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", f"--remote-debugging-port={port}",
                     f"--window-size={width},{height}", f"--user-data-dir={profile}", "about:blank"])
    try:
        page = next(t for t in wait_for(f"http://127.0.0.1:{port}/json", 60) if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True)
        ids = iter(range(1, 1000))

        def call(method: str, **params) -> dict:
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while (msg := json.loads(ws.recv())).get("id") != n:
                pass
            if "error" in msg or "exceptionDetails" in msg.get("result", {}):
                raise SystemExit(f"Chromium: {method}: {msg}")
            return msg["result"]

        # Tall while picking (the column picker lists only what fits), then the screenshot's size.
        call("Emulation.setDeviceMetricsOverride", width=width, height=max(height, 1000), deviceScaleFactor=1, mobile=False)
        call("Page.navigate", url=url)
        time.sleep(3)  # past the navigation: the script below runs in the new page
        found = call("Runtime.evaluate", expression=PICK_COLUMNS, returnByValue=True, awaitPromise=True)["result"]["value"]
        call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        time.sleep(2)
        out.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
        return found
    finally:
        stop(browser)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "mlflow-ui.png")
    parser.add_argument("--store", type=Path, help="serve this store (a directory holding mlflow.db) instead of making one")
    parser.add_argument("--size", default="1700x400", help="WIDTHxHEIGHT of the window [1700x400]")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's vaekit
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(prefix="vaekit-shot-") as tmp:
        store = args.store.resolve() if args.store else Path(tmp) / "store"
        store.mkdir(exist_ok=True)
        for lam in () if args.store else (500, 2000):  # cwd tmp: whatever a run writes beside the store stays in tmp
            print(f"+ vaekit run ... --option loss.lambda={lam}", flush=True)
            subprocess.run([sys.executable, "-m", "vaekit", "run", "--tracking-uri", str(store), *TINY,
                            "--option", f"loss.lambda={lam}"], cwd=tmp, env=env, check=True)
        port = free_port()
        ui = start([sys.executable, "-m", "vaekit", "ui", str(store), "--port", str(port)], cwd=tmp, env=env)
        try:
            wait_for(f"http://127.0.0.1:{port}/health")
            from mlflow import MlflowClient

            experiment = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_experiment_by_name("vaekit").experiment_id
            url = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
            found = screenshot(url, args.out, width, height, Path(tmp) / "chromium")
        finally:
            stop(ui)
    missing = [c for c in COLUMNS if c not in found]
    print(f"wrote {args.out}" + (f"; columns not found: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
