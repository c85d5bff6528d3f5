"""Start-up time of the CLI: wall time of ``vaekit --help`` and ``vaekit plugins`` (target < 0.5 s, on an idle machine).

Each command runs ``--repeats`` times as a fresh process; best and median are printed, with
``python -c pass`` as the floor (the interpreter's own start-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("vaekit", path=os.path.dirname(sys.executable)) or shutil.which("vaekit")
    vaekit = [exe] if exe else [sys.executable, "-m", "vaekit"]
    print(f"{os.cpu_count()} CPUs; command: {' '.join(vaekit)}")
    print(f"{'command':<24}{'best s':>9}{'median s':>10}")
    for label, cmd in [("python -c pass", [sys.executable, "-c", "pass"]),
                       ("vaekit --help", [*vaekit, "--help"]), ("vaekit plugins", [*vaekit, "plugins"])]:
        t = timed(cmd, args.repeats)
        verdict = "" if label.startswith("python") else ("  < 0.5 s: ok" if statistics.median(t) < 0.5 else "  >= 0.5 s: SLOW")
        print(f"{label:<24}{min(t):9.3f}{statistics.median(t):10.3f}{verdict}")


if __name__ == "__main__":
    main()
