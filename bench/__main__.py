"""``python -m bench``: run the quick benchmarks in one go and print their tables.

Each script can also be run alone with more options (see its ``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK = [
    ["rle.py"],
    ["tracker.py"],
    ["classical.py", "--every", "3"],
    ["sam_click.py"],
    ["predict_latency.py"],
    ["long_video.py", "--frames", "3000"],
    ["tracks.py"],
    ["video_decode.py", "--frames", "60", "--repeat", "1"],
    ["sam2_engine.py", "--sides", "256", "--frames", "10", "--size", "427x240"],
    ["bulk.py"],
    ["box_prompts.py", "--split", "tune", "--clicks", "1"],
    ["segmenter_threads.py", "--every", "3", "--repeat", "1"],
    ["corrections.py", "--split", "tune", "--rounds", "2", "--corrections", "mask"],
    ["correction_latency.py", "--repeat", "2"],
    ["still_video.py", "--split", "tune", "--frames", "8"],
]


def main() -> int:
    failed = []
    for cmd in QUICK:
        script = HERE / cmd[0]
        if not script.exists():
            print(f"== {cmd[0]}: missing, skipped", flush=True)
            continue
        print(f"\n== {' '.join(cmd)}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *cmd[1:]])
        if rc:
            failed.append(cmd[0])
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
