"""Spoken digits synthesised by espeak-ng (not by vaekit's generator): a second dataset for benchmarks/quality.py.

Writes ``OUT/VOICE/DIGIT_SPEED_PITCH.wav`` for the ten English digits, several espeak-ng voices and
variants (speakers), speeds (words per minute) and pitches, then ``vaekit prepare`` turns the folder
into notebook-format data split by speaker.  Needs ``espeak-ng`` (``apt-get install espeak-ng``).

    python benchmarks/make_speech.py /tmp/digits            # 3,360 clips (10 digits, 24 voices)
    vaekit prepare /tmp/digits /tmp/digits-data --split-by speaker
    python benchmarks/quality.py --data /tmp/digits-data
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["", "+m3", "+f2", "+f4"]  # male, lower male, two female variants
SPEEDS = [120, 150, 180, 210, 240]
PITCHES = [30, 50, 70, 90]


def main(out: str) -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng")
    root = Path(out)
    jobs = []
    for voice, variant in itertools.product(VOICES, VARIANTS):
        speaker = root / f"{voice}{variant.replace('+', '_')}"
        speaker.mkdir(parents=True, exist_ok=True)
        for digit, speed, pitch in itertools.product(DIGITS, SPEEDS[::2] if variant else SPEEDS, PITCHES):
            jobs.append(["espeak-ng", "-v", voice + variant, "-s", str(speed), "-p", str(pitch),
                         "-w", str(speaker / f"{digit}_{speed}_{pitch}.wav"), digit])
    with ThreadPoolExecutor(4) as pool:
        for result in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True), jobs):
            if result.returncode:
                sys.exit(result.stderr.decode())
    print(f"{len(jobs)} clips in {root}")


if __name__ == "__main__":
    main(sys.argv[1])
