"""The architecture-independent part of a forward pass: layer streaming, the output head,
and dispatch on ``general.architecture``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

import torch

from dynq.engine.common import ACTIVATION_TYPE, ggml_activation_round
from dynq.engine.weights import LayerWeights, WeightSource
from dynq.errors import DynqError
from dynq.gguf_io import GGUFFile, read_gguf

# hook(tensor_name, input_activations [N, n_in]) called before every matrix multiply
MatmulHook = Callable[[str, torch.Tensor], None]


# "exact": plain F32 arithmetic on the dequantized weights (the default).
# "ggml": activations rounded before each matrix multiply as llama.cpp's CPU backend rounds
# them (Q8_0/Q8_1/Q8_K for quantized weights). Each multiply then matches llama.cpp's to ~1e-7,
# but whole-model logits do not get closer: the rounding is discontinuous, so the tiny
# differences elsewhere (attention in F16) flip roundings and the two runs drift apart as much
# as with "exact" (KLD ~3e-3 on the bundled models). It is kept for op-level checks.
NUMERICS = ("ggml", "exact")


class UnsupportedArchitectureError(DynqError):
    """The GGUF's architecture has no forward implementation in dynq.engine."""


class Model:
    """A GGUF model run layer by layer: only one layer's weights are dequantized at a time.

    ``hidden(tokens)`` gives the final-normed hidden states of a batch of sequences [B, T]
    (each sequence starts at position 0 and attends causally within itself); ``project``
    turns hidden states into logits. ``logits(tokens)`` does both.
    """

    arch: ClassVar[str] = ""

    def __init__(self, gf: GGUFFile, device: str | torch.device = "cpu", numerics: str = "exact"):
        if numerics not in NUMERICS:
            raise DynqError(f"numerics {numerics!r}: expected one of {', '.join(NUMERICS)}")
        self.numerics = numerics
        self.gf = gf
        self.path = gf.path
        self.device = torch.device(device)
        self.w = WeightSource(gf, self.device)
        self.hook: MatmulHook | None = None
        self._output: torch.Tensor | None = None
        self.n_layer = int(self._key("block_count"))
        self.n_embd = int(self._key("embedding_length"))
        self.n_head = int(self._key("attention.head_count"))
        self.n_head_kv = int(gf.arch_key("attention.head_count_kv", self.n_head))
        self.head_dim = int(gf.arch_key("attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(gf.arch_key("attention.value_length", self.head_dim))
        self.eps = float(self._key("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(gf.arch_key("rope.freq_base", 10000.0))
        self.n_rot = int(gf.arch_key("rope.dimension_count", self.head_dim))
        out = "output.weight" if self.w.has("output.weight") else "token_embd.weight"
        self.output_name = out
        self.n_vocab = int(gf.by_name[out].shape[1])
        self.setup()

    def _key(self, key: str):
        v = self.gf.arch_key(key)
        if v is None:
            raise DynqError(f"{self.gf.path}: {self.gf.arch}.{key}: key missing from GGUF header")
        return v

    # -- per-architecture ------------------------------------------------------------------
    def setup(self) -> None:
        """Read architecture-specific hyperparameters."""

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.w.rows("token_embd.weight", tokens)

    def layer(self, il: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        raise NotImplementedError

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    # -- shared ----------------------------------------------------------------------------
    def linear(self, x: torch.Tensor, w: LayerWeights, short: str) -> torch.Tensor:
        """x @ W.T (+ bias), calling the matmul hook with the layer tensor's full name."""
        name = f"blk.{w.il}.{short}.weight"
        if self.hook is not None:
            self.hook(name, x.reshape(-1, x.shape[-1]))
        name = f"blk.{w.il}.{short}.weight"
        y = self.act(x, name) @ w[short].T
        b = w.get(f"{short}.bias")
        return y + b if b is not None else y

    @torch.inference_mode()
    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states [B, T, n_embd] of token ids [B, T] (or [T])."""
        if tokens.dim() == 1:
            tokens = tokens[None]
        x = self.embed(tokens.to(torch.long))
        for il in range(self.n_layer):
            w = self.w.layer(il)
            x = self.layer(il, x, w)
            del w
        return self.final(x)

    @torch.inference_mode()
    def project(self, h: torch.Tensor, keep: bool = True) -> torch.Tensor:
        """Logits [..., n_vocab] of hidden states [..., n_embd]. The output matrix is kept
        for later calls unless ``keep`` is false (``release`` frees it)."""
        out = self._output if self._output is not None else self.w.tensor(self.output_name)
        if keep:
            self._output = out
        if self.hook is not None:
            self.hook(self.output_name, h.reshape(-1, h.shape[-1]))
        return self.softcap(self.act(h, self.output_name) @ out.T)

    def act(self, x: torch.Tensor, weight_name: str) -> torch.Tensor:
        """The activations as multiplied with ``weight_name``: with numerics "ggml", rounded
        as llama.cpp's CPU backend rounds them for that weight's type."""
        if self.numerics != "ggml":
            return x
        t = self.gf.by_name[weight_name].type.name
        return ggml_activation_round(x, ACTIVATION_TYPE.get(t))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(self.hidden(tokens))

    def release(self) -> None:
        self._output = None


ARCHITECTURES: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    ARCHITECTURES[cls.arch] = cls
    return cls


def supported_architectures() -> list[str]:
    _load_archs()
    return sorted(ARCHITECTURES)


def _load_archs() -> None:
    from dynq.engine import gemma3, llama  # noqa: F401  (registration)


def load_model(
    source: str | os.PathLike[str] | GGUFFile,
    device: str | torch.device = "cpu",
    numerics: str = "exact",
) -> Model:
    """Open a GGUF model for the forward pass on ``device`` ("cpu", "cuda", ...)."""
    _load_archs()
    gf = source if isinstance(source, GGUFFile) else read_gguf(source)
    arch = gf.arch
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        raise UnsupportedArchitectureError(
            f"{gf.path}: architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    return cls(gf, device, numerics)
