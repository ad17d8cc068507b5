"""Responsiveness of ``dynq tui`` on the largest registry recipe, measured with Textual's Pilot.

    python bench/tui.py [--recipe registry/deepseek-v3.1.toml] [--size 200x60] [--repeat 5]

Each figure is wall time from the key press (or the call) until the screen has processed it and
repainted (``pilot.pause()`` after the messages it caused), in a headless terminal of the given
size:

- open: from the registry screen, ``open_recipe`` until the recipe screen shows its first target
  (recipe and inventory loaded, the first Plan, the 1086-row table, layer map and summary drawn);
- switch (cold): ``]`` to the next target right after opening, before the background pre-planning
  of the other targets has finished;
- switch (warm): ``]`` through every target once the other Plans are cached;
- edit: ``+`` on 58 marked ``ffn_down_exps`` tensors (a new rule: validate, re-plan, redraw),
  then ``u`` (undo).

The budget is 1 s per action; the ratio column is time / budget (lower is better).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGET = 1.0


class Clock:
    """Wall time and this process's CPU time (all threads) since ``start``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, times: list[tuple[float, float]]) -> None:
        times.append((time.perf_counter() - self.wall, time.process_time() - self.cpu))


async def measure(
    recipe: Path, size: tuple[int, int], repeat: int
) -> dict[str, list[tuple[float, float]]]:
    from textual.widgets import Input

    from tui.app import DynqApp
    from tui.screens.recipe import RecipeScreen
    from tui.widgets.tensor_table import TensorTable

    clock = Clock()
    times: dict[str, list[tuple[float, float]]] = {
        "open": [],
        "switch (cold)": [],
        "switch (warm)": [],
        "edit (+1 step)": [],
        "undo": [],
    }
    for _ in range(repeat):
        app = DynqApp(registry=recipe.parent, build_root=Path("/nonexistent-build"))
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            clock.start()
            app.open_recipe(recipe)
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, RecipeScreen)
            assert screen.query_one("#table", TensorTable).names
            clock.stop(times["open"])

            clock.start()
            await pilot.press("right_square_bracket")
            await pilot.pause()
            clock.stop(times["switch (cold)"])
            await app.workers.wait_for_complete()
            for _ in screen.editor.targets:
                clock.start()
                await pilot.press("right_square_bracket")
                await pilot.pause()
                clock.stop(times["switch (warm)"])

            await pilot.press("slash")
            screen.query_one("#filter", Input).value = "kind:ffn_down_exps"
            await pilot.press("enter", "a")
            await pilot.pause()
            n = len(screen.query_one("#table", TensorTable).marks)
            assert n > 1, n
            clock.start()
            await pilot.press("plus")
            await pilot.pause()
            clock.stop(times["edit (+1 step)"])
            assert screen.editor.dirty
            clock.start()
            await pilot.press("u")
            await pilot.pause()
            clock.stop(times["undo"])
            assert not screen.editor.dirty
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=Path("registry/deepseek-v3.1.toml"))
    ap.add_argument("--size", default="200x60", help="terminal WIDTHxHEIGHT")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from dynq.recipe import load_recipe

    loaded = load_recipe(args.recipe)
    from dynq.inventory import load_inventory

    inv = load_inventory(loaded.resolve(loaded.recipe.model.inventory))
    times = asyncio.run(measure(args.recipe, (w, h), args.repeat))
    load = os.getloadavg()[0]
    print(
        f"# {args.recipe} ({len(inv.tensors)} tensors, {len(loaded.recipe.targets)} targets), "
        f"terminal {w}x{h}, {args.repeat} runs, {os.cpu_count()} CPUs, load average {load:.1f}; "
        f"budget {BUDGET:.0f} s"
    )
    print(
        f"{'action':16s} {'wall median':>11s} {'wall max':>9s} {'cpu median':>10s} "
        f"{'wall max/budget':>15s}"
    )
    for name, ts in times.items():
        walls, cpus = [t[0] for t in ts], [t[1] for t in ts]
        print(
            f"{name:16s} {statistics.median(walls) * 1e3:8.0f} ms {max(walls) * 1e3:6.0f} ms "
            f"{statistics.median(cpus) * 1e3:7.0f} ms {max(walls) / BUDGET:15.2f}"
        )


if __name__ == "__main__":
    main()
