"""How long a command that does no numerical work takes to start, against the interpreter and the imports avoided.

    .venv/bin/python bench/startup.py [--repeats 7]

Baselines measured in the same run: a bare interpreter, and importing what every command used to load at start-up
(torch and the Neo4j driver). Medians of wall time per process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    neuronmap = str(Path(sys.executable).with_name("neuronmap"))
    cases = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "import torch, neo4j (avoided)": [sys.executable, "-c", "import torch, neo4j"],
        "neuronmap -h": [neuronmap, "-h"],
        "neuronmap cluster -h": [neuronmap, "cluster", "-h"],
        "neuronmap query -h": [neuronmap, "query", "-h"],
    }
    _median_seconds(cases["neuronmap -h"], 1)  # warm the file cache
    base = None
    print("| command | median s | × bare interpreter |")
    print("|---|---|---|")
    for label, argv in cases.items():
        seconds = _median_seconds(argv, repeats)
        base = base or seconds
        print(f"| {label} | {seconds:.3f} | {seconds / base:.1f} |")


if __name__ == "__main__":
    main()
