"""CLI start-up: ``lakelog --help`` and ``lakelog runs`` against Python's own start-up, side by side.

Each command is a fresh process (what a user waits for), run in rotating order within each repeat
(interleaved, so a busy machine slows all of them alike); medians of wall and CPU time are printed
with the load average. The target is ``lakelog --help`` <= 0.3 s with no torch and no command imported.

    python benchmarks/bench_cli.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of the child) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    lake = tempfile.mkdtemp(prefix="lakelog-bench-cli-")
    try:
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import lakelog\nwith lakelog.init({lake!r}, 'a') as r: r.log({{'loss': 1.0}}, step=0)",
            ],
            check=True,
        )
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import click'": [sys.executable, "-c", "import click"],
            "lakelog --help": [sys.executable, "-c", "from lakelog.cli import main; main()", "--help"],
            "lakelog runs": [
                sys.executable,
                "-c",
                "from lakelog.cli import main; main()",
                "runs",
                "--root",
                lake,
            ],
        }
        for command in commands.values():  # warm the file cache
            timed(command)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                wall, cpu = timed(commands[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
        base = statistics.median(walls["python -c pass"])
        print(
            f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.repeats} interleaved repeats"
        )
        print(f"{'command':28} {'wall s':>8} {'cpu s':>8} {'wall / python':>14}")
        for name in names:
            wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
            print(f"{name:28} {wall:8.3f} {cpu:8.3f} {wall / base:14.2f}")
        help_wall = statistics.median(walls["lakelog --help"])
        print(f"lakelog --help: {help_wall:.3f} s (target <= 0.3 s): {'ok' if help_wall <= 0.3 else 'over'}")
    finally:
        shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
