"""dynq's own forward engine (torch): GGUF tokenizer, weights, and one module per architecture.

``load_model(path, device=...)`` opens a GGUF model and returns a model object whose
``logits(tokens)`` streams the layers' weights one at a time from the memory-mapped file.
"""

from __future__ import annotations

from dynq.engine.model import (
    Model,
    UnsupportedArchitectureError,
    load_model,
    supported_architectures,
)
from dynq.engine.tokenizer import GGUFTokenizer, load_tokenizer

__all__ = [
    "GGUFTokenizer",
    "Model",
    "UnsupportedArchitectureError",
    "load_model",
    "load_tokenizer",
    "supported_architectures",
]
