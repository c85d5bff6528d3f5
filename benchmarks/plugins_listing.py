"""How long ``vaekit plugins`` takes, against Python's own start-up and a TensorFlow import.

Target (issue 4): well under 1 s, because listing plugins imports no TensorFlow.  Each command
runs in a fresh process ``--repeat`` times; the median wall time is printed with ratios to the
bare-interpreter baseline measured in the same run.

    python benchmarks/plugins_listing.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "vaekit --help": [sys.executable, "-m", "vaekit", "--help"],
    "vaekit plugins": [sys.executable, "-m", "vaekit", "plugins"],
    "vaekit plugins --json": [sys.executable, "-m", "vaekit", "plugins", "--json"],
    "import tensorflow (for scale)": [sys.executable, "-c", "import tensorflow"],
}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    medians = {name: statistics.median(wall(cmd) for _ in range(args.repeat)) for name, cmd in COMMANDS.items()}
    base = medians["python -c pass (baseline)"]
    print(f"{'command':<32} {'median s':>9} {'× baseline':>11}")
    for name, seconds in medians.items():
        print(f"{name:<32} {seconds:>9.3f} {seconds / base:>11.1f}")
    listing = medians["vaekit plugins"]
    print(f"\nvaekit plugins: {listing:.3f} s ({'meets' if listing < 1 else 'MISSES'} the < 1 s target)")


if __name__ == "__main__":
    main()
