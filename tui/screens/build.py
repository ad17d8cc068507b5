"""Build one target in a worker thread: per-tensor progress, ETA, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, ProgressBar, Static

from dynq.errors import DynqError
from dynq.recipe import LoadedRecipe
from tui.messages import BuildFinished, BuildProgress
from tui.model import fmt_size


class BuildCancelled(Exception):
    """Raised from the progress callback: the builder removes its temporary files."""


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BuildScreen(ModalScreen[bool]):
    """Dismisses True when the output was built."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel build / close"),
        Binding("f", "force", "Overwrite", show=False),
    ]

    def __init__(
        self, loaded: LoadedRecipe, target: str, out: Path, total_bytes: int, n_tensors: int
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.target = target
        self.out = out
        self.total_bytes = max(total_bytes, 1)
        self.n_tensors = n_tensors
        self.cancel_event = threading.Event()
        self.running = False
        self.done = False
        self.ok = False
        self.started = 0.0
        self._last_post = 0.0

    def compose(self) -> ComposeResult:
        name = self.loaded.recipe.name
        with Vertical(classes="dialog build"):
            yield Static(f"Build {name} / {self.target}", classes="dialog-title", markup=False)
            yield Static(
                f"→ {self.out / f'{name}-{self.target}.gguf'}", id="build-path", markup=False
            )
            yield ProgressBar(total=self.n_tensors, show_eta=False, id="build-bar")
            yield Static("", id="build-status")
            yield Static("", id="build-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (esc)", id="cancel", variant="error", compact=True)
                yield Button("Overwrite (f)", id="force", variant="warning", compact=True)

    def on_mount(self) -> None:
        from dynq.outputs import output_path

        self.query_one("#force").display = False
        path = output_path(self.loaded, self.target, self.out)
        if path.exists():
            self._status(f"{path.name} exists: f overwrites it, esc closes", "yellow")
            self.query_one("#force").display = True
            self.query_one("#cancel", Button).label = "Close (esc)"
            return
        self.start(force=False)

    def start(self, force: bool) -> None:
        self.query_one("#force").display = False
        self.query_one("#cancel", Button).label = "Cancel (esc)"
        self.running = True
        self.started = time.monotonic()
        self._status("starting (loading the kernels)…", "")
        self.run_build(force)

    @work(thread=True, exclusive=True, group="build")
    def run_build(self, force: bool) -> None:
        try:
            from dynq.build import Builder, BuildOptions

            opts = BuildOptions(targets=[self.target], out=self.out, force=force)
            builder = Builder(self.loaded, opts)
            self.started = time.monotonic()
            reports = builder.run(self._progress)
        except BuildCancelled:
            self.post_message(BuildFinished(self.target, False, "cancelled: nothing was written"))
            return
        except (DynqError, OSError) as e:
            self.post_message(BuildFinished(self.target, False, f"failed: {e}"))
            return
        except Exception as e:  # a bug in the builder: show it, keep the UI alive
            self.post_message(BuildFinished(self.target, False, f"failed: {type(e).__name__}: {e}"))
            return
        r = reports[0]
        self.post_message(
            BuildFinished(
                self.target,
                True,
                f"built {r.file}: {r.file_size:,} bytes (= Plan), {r.bpw:.3f} bpw, "
                f"{r.seconds:.1f} s, sha256 {r.sha256[:12]}",
            )
        )

    def _progress(self, target: str, done: int, nbytes: int, total: int) -> None:
        if self.cancel_event.is_set():
            raise BuildCancelled
        now = time.monotonic()
        if done == total or now - self._last_post >= 0.05:
            self._last_post = now
            self.post_message(BuildProgress(target, done, nbytes, total))

    def on_build_progress(self, msg: BuildProgress) -> None:
        if self.done:
            return
        self.query_one("#build-bar", ProgressBar).update(total=msg.total, progress=msg.tensors_done)
        elapsed = time.monotonic() - self.started
        frac = msg.bytes_done / self.total_bytes
        eta = _eta(elapsed / frac * (1 - frac)) if frac > 0 else "—"
        self._status(
            f"{msg.tensors_done}/{msg.total} tensors · {fmt_size(msg.bytes_done)} of "
            f"{fmt_size(self.total_bytes)} · {elapsed:.1f} s · ETA {eta}",
            "",
        )

    def on_build_finished(self, msg: BuildFinished) -> None:
        self.running = False
        self.done = True
        self.ok = msg.ok
        if msg.ok:
            bar = self.query_one("#build-bar", ProgressBar)
            bar.update(progress=bar.total or 0)
        self._status(msg.message, "bold green" if msg.ok else "bold red")
        self.query_one("#cancel", Button).label = "Close (esc)"

    def _status(self, text: str, style: str) -> None:
        self.query_one("#build-status", Static).update(Text(text, style=style))

    def action_force(self) -> None:
        if not self.running and not self.done:
            self.start(force=True)

    def action_cancel(self) -> None:
        if self.running:
            self.cancel_event.set()
            self._status("cancelling…", "yellow")
            return
        self.dismiss(self.ok)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "force":
            self.action_force()
        else:
            self.action_cancel()
