"""Judge candidate GGUF quantizations against a reference: perplexity, KL divergence, top-1
agreement — computed as llama.cpp's ``llama-perplexity`` computes them.

Chunking follows ``llama-perplexity -c CTX --chunks N``: the text (one trailing newline
dropped, as ``-f`` does; no escape processing, as ``--no-escape``) is tokenized with BOS when
the model asks for it, cut into the first N windows of CTX tokens, each window's first token is
replaced by BOS (when the model adds BOS), and each window is scored on its second half: the
logits at positions CTX/2 .. CTX-2 predict tokens CTX/2+1 .. CTX-1.

The reference's log-probabilities are stored once in llama.cpp's ``--kl-divergence-base`` file
format (per token: f32 scale, f32 minimum log-prob, then one uint16 per vocabulary entry over
the top 16 nats), so a base file written by ``llama-perplexity --kl-divergence-base`` can be
read here and one written here can be given to llama.cpp.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dynq.engine.model import Model, load_model
from dynq.engine.tokenizer import load_tokenizer
from dynq.errors import DynqError
from dynq.gguf_io import GGUFFile, read_gguf

MAGIC = b"_logits_"
ROWS = 64  # positions projected to logits at once (bounds memory for large vocabularies)


class EvalError(DynqError):
    """Evaluation inputs are inconsistent: text too short, models that do not match."""


# -- text and chunks ------------------------------------------------------------------------
def read_text(path: str | os.PathLike[str]) -> str:
    """A text file as llama.cpp's ``-f`` reads it: UTF-8, one trailing newline removed."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise EvalError(f"{p}: text file not found") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{p}: not UTF-8 text ({e})") from None
    return text[:-1] if text.endswith("\n") else text


def tokenize_text(model_path: str | os.PathLike[str] | GGUFFile, text: str) -> list[int]:
    """Token ids as llama-perplexity tokenizes its text (BOS added when the model asks)."""
    return load_tokenizer(model_path).encode(text, add_special=True, parse_special=False)


def make_chunks(
    tokens: Sequence[int], ctx: int, chunks: int | None, bos_id: int | None, add_bos: bool
) -> torch.Tensor:
    """The first ``chunks`` windows of ``ctx`` tokens [M, ctx] (BOS first when ``add_bos``)."""
    if ctx < 4 or ctx % 2:
        raise EvalError(f"--ctx {ctx}: must be an even number of at least 4 tokens")
    n_max = len(tokens) // ctx
    if len(tokens) < 2 * ctx:
        raise EvalError(
            f"text too short: {len(tokens)} tokens; at least {2 * ctx} needed "
            f"for a context of {ctx} (as llama-perplexity requires)"
        )
    n = n_max if chunks is None or chunks < 0 else min(chunks, n_max)
    t = torch.tensor(list(tokens[: n * ctx]), dtype=torch.long).reshape(n, ctx)
    if add_bos and bos_id is not None:
        t[:, 0] = bos_id
    return t


# -- llama.cpp's compact log-prob format ----------------------------------------------------
def row_width(n_vocab: int) -> int:
    return 2 * ((n_vocab + 1) // 2) + 4


def encode_logprobs(logits: torch.Tensor) -> np.ndarray:
    """uint16 rows [N, row_width] of logits [N, V], as perplexity.cpp's ``log_softmax``."""
    lg = logits.float()
    n, v = lg.shape
    mx = lg.max(-1, keepdim=True).values
    mn = torch.maximum(lg.min(-1, keepdim=True).values, mx - 16)
    lse = torch.log(torch.exp((lg - mx).double()).sum(-1, keepdim=True)).float()
    min_log_prob = mn - mx - lse
    scale = (mx - mn) / 65535.0
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    q = torch.where(lg > mn, torch.round(inv * (lg - mn)), torch.zeros_like(lg))
    out = np.zeros((n, row_width(v)), dtype=np.uint16)
    head = torch.cat([scale, min_log_prob], -1).numpy().astype(np.float32)
    out[:, :4] = head.view(np.uint16)
    out[:, 4 : 4 + v] = q.clamp(0, 65535).numpy().astype(np.uint16)
    return out


def decode_logprobs(rows: np.ndarray, n_vocab: int) -> torch.Tensor:
    """Log-probs [N, V] (float64) of uint16 rows: scale*q + min_log_prob."""
    head = np.ascontiguousarray(rows[:, :4]).view(np.float32).astype(np.float64)
    q = torch.from_numpy(rows[:, 4 : 4 + n_vocab].astype(np.float64))
    return torch.from_numpy(head[:, :1]) * q + torch.from_numpy(head[:, 1:2])


@dataclass
class LogitsBase:
    """A reference's log-probs over the scored half of each chunk (llama.cpp's base file)."""

    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 [n_chunk * n_ctx] (the text's tokens, BOS not substituted)

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    @property
    def n_scored(self) -> int:
        return self.n_ctx - 1 - self.first

    def _offset(self) -> int:
        return 8 + 12 + 4 * self.n_chunk * self.n_ctx

    def rows(self, chunk: int) -> np.ndarray:
        nv = row_width(self.n_vocab)
        count = self.n_scored * nv
        off = self._offset() + chunk * count * 2
        mm = np.memmap(self.path, dtype=np.uint16, mode="r", offset=off, shape=(count,))
        return np.array(mm).reshape(self.n_scored, nv)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> LogitsBase:
        p = Path(path)
        with open(p, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:8] != MAGIC:
                raise EvalError(f"{p}: not a llama.cpp logits base file (bad magic)")
            n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(head, np.int32, 3, 8))
            tokens = np.frombuffer(f.read(4 * n_chunk * n_ctx), np.int32).copy()
        base = cls(p, n_ctx, n_vocab, n_chunk, tokens)
        need = base._offset() + n_chunk * base.n_scored * row_width(n_vocab) * 2
        if p.stat().st_size < need:
            raise EvalError(f"{p}: truncated logits base ({p.stat().st_size} < {need} bytes)")
        return base


def write_base(
    path: str | os.PathLike[str],
    model: Model,
    chunk_tokens: torch.Tensor,
    text_tokens: np.ndarray,
    batch: int = 4,
    progress: Callable[[str], None] | None = None,
) -> LogitsBase:
    """Run the reference over the chunks and write its log-probs (llama.cpp's format)."""
    n_chunk, n_ctx = chunk_tokens.shape
    first = n_ctx // 2
    p = Path(path)
    part = p.with_name(p.name + ".part")
    with open(part, "wb") as f:
        f.write(MAGIC)
        f.write(np.array([n_ctx, model.n_vocab, n_chunk], np.int32).tobytes())
        f.write(np.asarray(text_tokens[: n_chunk * n_ctx], np.int32).tobytes())
        for c0 in range(0, n_chunk, batch):
            h = model.hidden(chunk_tokens[c0 : c0 + batch])
            for j in range(h.shape[0]):
                for r0 in range(first, n_ctx - 1, ROWS):
                    lg = model.project(h[j, r0 : min(r0 + ROWS, n_ctx - 1)])
                    f.write(encode_logprobs(lg.cpu()).tobytes())
            if progress:
                progress(f"reference: {min(c0 + batch, n_chunk)}/{n_chunk} chunks")
    part.replace(p)
    return LogitsBase.read(p)


# -- scores ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """One candidate's scores against the reference (``to_json`` gives the report keys)."""

    path: str
    ppl: float
    mean_kld: float
    median_kld: float
    p90_kld: float
    p99_kld: float
    max_kld: float
    top1_agreement: float
    n_tokens: int
    chunk_ppl: list[float] = field(default_factory=list)
    chunk_kld: list[float] = field(default_factory=list)
    reference_ppl: float = float("nan")

    def to_json(self) -> dict:
        return asdict(self)


def score_chunk(logits: torch.Tensor, base_rows: np.ndarray, targets: torch.Tensor, n_vocab: int):
    """Per-token (kld, nll, same_top) of candidate logits [N, V] against base rows, as
    perplexity.cpp's KL-divergence ``log_softmax`` computes them; plus the base's nll."""
    lg = logits.double()
    logq = torch.log_softmax(lg, -1)
    logp = decode_logprobs(base_rows, n_vocab)
    p = torch.where(logp > -16, torch.exp(logp), torch.zeros_like(logp))
    kld = (p * (logp - logq)).sum(-1)
    nll = -logq.gather(-1, targets[:, None]).squeeze(-1)
    nll_base = -logp.gather(-1, targets[:, None]).squeeze(-1)
    same = lg.argmax(-1) == logp.argmax(-1)
    return kld, nll, same, nll_base


def score_candidate(
    model: Model,
    base: LogitsBase,
    chunk_tokens: torch.Tensor,
    batch: int = 4,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    n_chunk, n_ctx = chunk_tokens.shape
    first = base.first
    text = torch.from_numpy(base.tokens.astype(np.int64)).reshape(n_chunk, n_ctx)
    klds, nlls, sames, chunk_ppl, chunk_kld, nll_bases = [], [], [], [], [], []
    for c0 in range(0, n_chunk, batch):
        h = model.hidden(chunk_tokens[c0 : c0 + batch])
        for j in range(h.shape[0]):
            c = c0 + j
            rows = base.rows(c)
            parts = []
            for r0 in range(first, n_ctx - 1, ROWS):
                r1 = min(r0 + ROWS, n_ctx - 1)
                lg = model.project(h[j, r0:r1]).cpu()
                targets = text[c, r0 + 1 : r1 + 1]
                parts.append(score_chunk(lg, rows[r0 - first : r1 - first], targets, base.n_vocab))
            kld, nll, same, nll_base = (torch.cat(x) for x in zip(*parts, strict=True))
            klds.append(kld)
            nlls.append(nll)
            sames.append(same)
            nll_bases.append(nll_base)
            chunk_ppl.append(math.exp(nll.mean().item()))
            chunk_kld.append(kld.mean().item())
        if progress:
            progress(f"{model.path.name}: {min(c0 + batch, n_chunk)}/{n_chunk} chunks")
    model.release()
    k = torch.cat(klds)
    q = torch.quantile(k, torch.tensor([0.5, 0.9, 0.99], dtype=k.dtype)).tolist()
    return EvalResult(
        path=str(model.path),
        ppl=math.exp(torch.cat(nlls).mean().item()),
        mean_kld=k.mean().item(),
        median_kld=q[0],
        p90_kld=q[1],
        p99_kld=q[2],
        max_kld=k.max().item(),
        top1_agreement=torch.cat(sames).double().mean().item(),
        n_tokens=int(k.numel()),
        chunk_ppl=chunk_ppl,
        chunk_kld=chunk_kld,
        reference_ppl=math.exp(torch.cat(nll_bases).mean().item()),
    )


# -- models must match ----------------------------------------------------------------------
def model_signature(gf: GGUFFile) -> dict:
    tokens = gf.get("tokenizer.ggml.tokens") or []
    h = hashlib.sha256("\0".join(tokens).encode("utf-8", "surrogateescape")).hexdigest()
    return {
        "architecture": gf.arch,
        "block_count": gf.arch_key("block_count"),
        "embedding_length": gf.arch_key("embedding_length"),
        "vocabulary": h[:16],
    }


def check_same_model(ref: GGUFFile, cand: GGUFFile) -> None:
    a, b = model_signature(ref), model_signature(cand)
    for key in a:
        if a[key] != b[key]:
            raise EvalError(
                f"{cand.path}: not the same model as reference {ref.path} "
                f"({key}: {b[key]} vs {a[key]})"
            )


# -- the library entry point ----------------------------------------------------------------
def evaluate(
    reference_path: str | os.PathLike[str],
    candidate_paths: Sequence[str | os.PathLike[str]],
    tokens: Sequence[int] | str,
    ctx: int = 512,
    chunks: int | None = None,
    device: str = "cpu",
    base_path: str | os.PathLike[str] | None = None,
    batch: int = 4,
    progress: Callable[[str], None] | None = None,
) -> list[EvalResult]:
    """Score each candidate against the reference on ``tokens`` (ids, BOS included as the
    model tokenizes; or the text itself). The reference's log-probs are written to
    ``base_path`` (reused when it exists and matches), else to a temporary file."""
    ref_gf = read_gguf(reference_path)
    ref = load_model(ref_gf, device)  # raises on an unsupported architecture
    cands = [read_gguf(p) for p in candidate_paths]
    for c in cands:
        check_same_model(ref_gf, c)
    if isinstance(tokens, str):
        tokens = tokenize_text(ref_gf, tokens)
    bos = ref_gf.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(
        ref_gf.get("tokenizer.ggml.add_bos_token", ref_gf.get("tokenizer.ggml.model") == "llama")
    )
    chunk_tokens = make_chunks(tokens, ctx, chunks, bos, add_bos)
    text_tokens = np.asarray(tokens[: chunk_tokens.numel()], np.int32)
    tmp = None
    if base_path is None:
        tmp = tempfile.NamedTemporaryFile(prefix="dynq-base-", suffix=".kld", delete=False)
        tmp.close()
        base_path = tmp.name
    try:
        base = _reuse_base(base_path, chunk_tokens, text_tokens, ref.n_vocab)
        if base is None:
            base = write_base(base_path, ref, chunk_tokens, text_tokens, batch, progress)
        ref.release()
        results = []
        for c in cands:
            model = load_model(c, device)
            results.append(score_candidate(model, base, chunk_tokens, batch, progress))
        return results
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)


def _reuse_base(path, chunk_tokens, text_tokens, n_vocab) -> LogitsBase | None:
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return None
    try:
        base = LogitsBase.read(p)
    except EvalError:  # a partial file from an interrupted run: write it anew
        return None
    n_chunk, n_ctx = chunk_tokens.shape
    if (base.n_ctx, base.n_chunk, base.n_vocab) != (n_ctx, n_chunk, n_vocab) or not np.array_equal(
        base.tokens, text_tokens
    ):
        return None
    return base
