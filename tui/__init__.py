"""The dynq terminal UI (Textual): a client of dynq's public API; dynq never imports it."""

from __future__ import annotations

from pathlib import Path


def run(
    recipe: Path | None = None,
    registry: Path | None = Path("registry"),
    target: str | None = None,
    build_root: Path = Path("build"),
) -> int:
    from tui.app import DynqApp

    app = DynqApp(registry=registry, recipe=recipe, target=target, build_root=build_root)
    app.run()
    for path in app.recovered:
        print(f"dynq tui: unsaved edits kept in {path} (the recipe file is unchanged)")
    return app.return_code or 0
