"""``vaekit explore``'s latency: p50/p95 of ``POST /api/decode`` (decode one z, vocode it, answer a WAV) over HTTP.

Target: p95 ≤ 300 ms for one clip on a 2-core CPU (sliders decode as they move).  The requests go to
the real app on a real uvicorn server (in a thread of this process), one at a time, as the page
sends them; z ~ N(0, I), seeded.  The baseline is what the listening commands (``vaekit generate``)
do for one clip: ``model.decode`` (Keras ``predict``) and the run's own vocoder, timed over fewer
repeats since librosa's Griffin-Lim takes seconds a clip.  Both are printed with the vocoder used
and the ratio of their medians, with the load average (wall times mean little on a busy machine; the
CPU time a decode costs, client and server together, is printed too: on an idle machine the wall time
cannot be much less).

    python benchmarks/explore.py                          # trains a throwaway conv2 run (1 epoch, 256 synthetic clips)
    python benchmarks/explore.py --run RUN_ID --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def throwaway_run(where: str) -> tuple[str, str]:
    """A conv2 run with every default (latent_dim 20, griffinlim n_iter 32) but 1 epoch on 256 synthetic clips."""
    from vaekit.commands.run import run
    from vaekit.config import RunConfig

    os.environ["VAEKIT_CACHE"] = os.path.join(where, "cache")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        uri = f"sqlite:///{where}/mlflow.db"
        config = RunConfig(tracking_uri=uri, epochs=1, samples=0, options={"dataset": {"clips": 256, "progress": False}})
        return run(config, progress=False).run_id, uri
    finally:
        os.chdir(cwd)


def post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["Content-Type"] == "audio/wav"
        return resp.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="A logged run [a throwaway one, trained first].")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--vocoder", help="explore's --vocoder [the run's, or its stand-in].")
    parser.add_argument("-n", type=int, default=100, help="Decodes timed.")
    parser.add_argument("--baseline-repeats", type=int, default=5)
    parser.add_argument("--workdir", help="Train the throwaway run here and keep it [a temporary folder].")
    args = parser.parse_args()

    import uvicorn

    from vaekit.commands.explore import create_app, listen_socket, load_explorer
    from vaekit.components import vocode
    from vaekit.logged import build_vocoders

    with tempfile.TemporaryDirectory() as tmp:
        if args.workdir:
            os.makedirs(args.workdir, exist_ok=True)
        run_id, uri = (args.run, args.tracking_uri) if args.run else throwaway_run(os.path.abspath(args.workdir or tmp))
        explorer = load_explorer(run_id, vocoder=args.vocoder, tracking_uri=uri)
        sock = listen_socket("127.0.0.1", _free_port())
        server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning", lifespan="off"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/decode"
        z = np.random.default_rng(0).standard_normal((args.n + 3, explorer.latent_dim)).round(4).tolist()
        load_before = os.getloadavg()
        for v in z[:3]:  # warm-up
            post(url, {"z": v})
        times = []
        cpu_start = time.process_time()  # the server runs in this process: its CPU time is counted too
        for v in z[3:]:
            start = time.perf_counter()
            post(url, {"z": v})
            times.append(time.perf_counter() - start)
        cpu_ms = (time.process_time() - cpu_start) / len(times) * 1000
        server.should_exit = True

        run = explorer.run
        ((base_name, (comp, fn)),) = build_vocoders(run).items()
        base = []
        for v in z[:args.baseline_repeats]:
            start = time.perf_counter()
            mel_db = run.denormalize(run.model.decode(np.asarray([v], dtype=np.float32))[..., 0])
            vocode(comp, fn, mel_db)
            base.append(time.perf_counter() - start)
        load_after = os.getloadavg()

    p50, p95 = percentile(times, 50) * 1000, percentile(times, 95) * 1000
    b50 = statistics.median(base) * 1000
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)")
    print(f"run {run_id}: latent_dim {explorer.latent_dim}, {explorer.run.input_shape[0]}×{explorer.run.input_shape[1]} "
          f"mel, {run.audio.duration:g} s at {run.audio.sr} Hz")
    print(f"vaekit explore  POST /api/decode, vocoder {explorer.vocoder}: p50 {p50:.0f} ms, p95 {p95:.0f} ms "
          f"over {len(times)} decodes (max {max(times) * 1000:.0f} ms); {cpu_ms:.0f} CPU-ms each, client included")
    print(f"baseline        model.decode + the run's vocoder {base_name}: p50 {b50:.0f} ms over {len(base)} clips")
    print(f"ratio (baseline p50 / explore p50): {b50 / p50:.1f}×")
    print(f"target p95 ≤ 300 ms: {'met' if p95 <= 300 else 'missed'}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
