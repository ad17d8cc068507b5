"""One error hierarchy. The CLI prints ``str(err)`` and exits 2; the TUI shows it with notify."""

from __future__ import annotations


class DynqError(Exception):
    """A user-facing error: its message is one line naming the file and the key or tensor."""


class RecipeError(DynqError):
    """A recipe file is malformed, inconsistent with its inventory, or names a missing file."""


class InventoryError(DynqError):
    """A model inventory (GGUF header, safetensors header, cached JSON) could not be read."""


class SourceError(DynqError):
    """A model source reference (path, pypi:, hf://) could not be resolved or failed its hash."""


class QuantTypeError(DynqError):
    """An unknown GGML type name, or a type that cannot hold a tensor."""


class KernelError(DynqError):
    """Bad input to a quantization kernel: NaN/inf, wrong row length, wrong imatrix length."""
