"""dynq: declarative per-tensor GGUF quantization recipes and the tools that build them."""

#: the package's version (pyproject.toml reads it from here; importlib.metadata would cost
#: every command 50 ms of start-up)
__version__ = "0.1.0"
