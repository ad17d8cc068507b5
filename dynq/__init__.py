"""dynq: declarative per-tensor GGUF quantization recipes and the tools that build them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dynq")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
