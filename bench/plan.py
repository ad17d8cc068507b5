"""Speed of the registry core: `dynq validate` on the whole registry and `dynq plan` on the
largest recipe (deepseek-v3.1, all targets), as a user runs them (fresh processes, through the
entry point), against the goal of one second each.

    .venv/bin/python bench/plan.py [--repeat 5]

Prints the median wall time of each command and its ratio to the 1 s budget (< 1 is better),
plus the in-process time of the resolver alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 1.0


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dynq = [sys.executable, "-m", "dynq"]
    rows = [
        ("dynq validate (registry/, 4 recipes)", wall([*dynq, "validate", "-q"], args.repeat)),
        (
            "dynq plan deepseek-v3.1 (6 targets, json)",
            wall([*dynq, "plan", "registry/deepseek-v3.1.toml", "-f", "json"], args.repeat),
        ),
        ("python -c pass (interpreter start)", wall([sys.executable, "-c", "pass"], args.repeat)),
    ]
    sys.path.insert(0, str(ROOT))
    from dynq.plan import Resolver
    from dynq.recipe import load_recipe

    t = time.perf_counter()
    for _ in range(args.repeat):
        Resolver(load_recipe(ROOT / "registry/deepseek-v3.1.toml")).plan_all()
    rows.append(
        ("resolver only, deepseek-v3.1 (in process)", (time.perf_counter() - t) / args.repeat)
    )
    print(f"{'what':45} {'seconds':>8} {'ratio to 1 s':>13}")
    for name, s in rows:
        print(f"{name:45} {s:8.3f} {s / BUDGET_S:13.2f}")


if __name__ == "__main__":
    main()
