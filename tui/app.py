"""The dynq TUI application: a registry browser and a recipe workbench."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from dynq.errors import DynqError
from tui.editor import Editor


class DynqApp(App):
    """``DynqApp(registry, recipe=None, target=None, build_root)``: with a recipe, its screen
    opens first (escape goes back to the registry when there is one)."""

    CSS_PATH = "app.tcss"
    TITLE = "dynq"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", show=False),
    ]

    def __init__(
        self,
        registry: Path | None = Path("registry"),
        recipe: Path | None = None,
        target: str | None = None,
        build_root: Path = Path("build"),
    ) -> None:
        super().__init__()
        self.registry = registry
        self.recipe_path = recipe
        self.start_target = target
        self.build_root = build_root
        self.recovered: list[Path] = []
        # template checks of the recipes opened, by (file, sha256): tui.template.TemplateResult
        self.template_results: dict = {}

    def on_mount(self) -> None:
        from tui.screens.registry import RegistryScreen

        has_registry = self.registry is not None and self.registry.is_dir()
        if has_registry:
            self.push_screen(RegistryScreen(self.registry, self.build_root))  # type: ignore[arg-type]
        if self.recipe_path is not None:
            if not self.open_recipe(self.recipe_path, self.start_target) and not has_registry:
                self.exit(return_code=2)
        elif not has_registry:
            self.exit(return_code=2, message=f"{self.registry}/: no registry folder here")

    def open_recipe(self, path: Path, target: str | None = None) -> bool:
        from tui.screens.recipe import RecipeScreen

        try:
            editor = Editor.open(path)
            screen = RecipeScreen(editor, target, self.build_root)
            editor.plan(screen.target)  # a recipe that does not plan shows its error here
        except DynqError as e:
            self.notify(str(e), title="cannot open", severity="error", timeout=10)
            if not (self.registry and self.registry.is_dir()):
                self.exit(return_code=2, message=str(e))
            return False
        self.push_screen(screen)
        return True

    def leave_recipe(self, screen) -> None:
        """Back from a recipe screen, asking first when it has unsaved changes."""

        def go() -> None:
            if len(self.screen_stack) > 2:
                self.pop_screen()
                from tui.screens.registry import RegistryScreen

                if isinstance(self.screen, RegistryScreen):
                    self.screen.action_refresh()
            else:
                self.exit()

        if not screen.editor.dirty:
            go()
            return
        self._ask_unsaved(screen, go)

    def _ask_unsaved(self, screen, then) -> None:
        from tui.screens.confirm import ConfirmScreen
        from tui.screens.save import SaveScreen

        def answer(choice: str | None) -> None:
            if choice == "discard":
                then()
            elif choice == "save":

                def saved(ok: bool | None) -> None:
                    if ok:
                        then()

                self.push_screen(SaveScreen(screen.editor), saved)

        name = screen.editor.path.name
        self.push_screen(
            ConfirmScreen(
                "Unsaved changes",
                f"{name} has unsaved changes ({screen.editor.undo_description or 'edits'}).",
                [("save", "Save", "s"), ("discard", "Discard", "d"), ("cancel", "Cancel", "c")],
            ),
            answer,
        )

    def _handle_exception(self, error: Exception) -> None:
        """A crash: keep unsaved edits beside the recipe (the recipe itself is never touched:
        saves are atomic), then let Textual report the error."""
        try:
            self.recovered = self.save_recovery()
        except Exception:  # never let the rescue hide the original error
            self.recovered = []
        super()._handle_exception(error)

    def save_recovery(self) -> list[Path]:
        """Write each unsaved working copy to ``<recipe>.toml.unsaved``; returns the paths."""
        from tui.screens.recipe import RecipeScreen

        out: list[Path] = []
        for screen in self.screen_stack:
            if isinstance(screen, RecipeScreen) and screen.editor.dirty:
                path = screen.editor.path.with_name(screen.editor.path.name + ".unsaved")
                from dynq.fsutil import atomic_write_text

                atomic_write_text(path, screen.editor.text())
                out.append(path)
        return out

    async def action_quit(self) -> None:
        from tui.screens.recipe import RecipeScreen

        dirty = [s for s in self.screen_stack if isinstance(s, RecipeScreen) and s.editor.dirty]
        if dirty:
            self._ask_unsaved(dirty[-1], self.exit)
            return
        self.exit()

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
