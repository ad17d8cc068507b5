"""A ``tokenizers.Tokenizer`` built from a GGUF file's ``tokenizer.ggml.*`` metadata, giving the
same token ids as llama.cpp's ``llama_tokenize`` (``parse_special=false``, as llama-perplexity
and llama-imatrix tokenize their text files).

Two vocabulary models are supported:

* ``gpt2`` — byte-level BPE with ranked merges. The text is split by the pre-tokenizer regexes
  that llama.cpp's ``llama-vocab.cpp`` assigns to ``tokenizer.ggml.pre`` (applied in sequence,
  keeping both matches and the text between them), then byte-level encoded.
* ``llama`` — SentencePiece. llama.cpp merges adjacent symbols greedily by the score of the
  merged piece; the equivalent BPE merge list is derived from the scores (as transformers'
  ``SentencePieceExtractor`` does), with byte fallback to ``<0xXX>`` tokens and spaces written as
  ``▁`` (with a leading one when ``tokenizer.ggml.add_space_prefix`` is true).

In both, user-defined tokens (token type 4) are split out of the text first, as llama.cpp does
even without special-token parsing; control tokens (type 3) are recognised only when
``parse_special=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from dynq.errors import DynqError
from dynq.gguf_io import GGUFFile, read_gguf

# llama.cpp token types (tokenizer.ggml.token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = (
    1,
    2,
    3,
    4,
    5,
    6,
)

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> the regexes llama-vocab.cpp applies, in order.
PRE_TOKENIZER_REGEXES: dict[str, list[str]] = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    "gpt2": [_GPT2],
    "gpt-2": [_GPT2],
    "mpt": [_GPT2],
    "olmo": [_GPT2],
    "jais": [_GPT2],
    "llama3": [_LLAMA3],
    "llama-v3": [_LLAMA3],
    "llama-bpe": [_LLAMA3],
    "dbrx": [_LLAMA3],
    "smaug-bpe": [_LLAMA3],
    "falcon3": [_LLAMA3],
    "pixtral": [_LLAMA3],
    "qwen2": [_QWEN2],
    "stablelm2": [_QWEN2],
    "smollm": [r"\p{N}", _GPT2],
    "starcoder": [r"\p{N}", _GPT2],
    "refact": [r"\p{N}", _GPT2],
    "command-r": [r"\p{N}", _GPT2],
    "codeshell": [r"\p{N}", _GPT2],
    "exaone": [r"\p{N}", _GPT2],
    "minerva-7b": [r"\p{N}", _GPT2],
}

SUPPORTED_MODELS = ("gpt2", "llama")


@dataclass
class GGUFTokenizer:
    """The tokenizer of one GGUF model. ``encode`` follows llama.cpp's ``common_tokenize``."""

    hf: Tokenizer
    model: str
    pre: str
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    n_vocab: int

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` prepends BOS when the model asks for it."""
        self.hf.encode_special_tokens = not parse_special
        ids = self.hf.encode(text, add_special_tokens=False).ids if text else []
        if add_special and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)


def _special(gf: GGUFFile, key: str) -> int | None:
    v = gf.get(f"tokenizer.ggml.{key}")
    return None if v is None else int(v)


def load_tokenizer(source: str | os.PathLike[str] | GGUFFile) -> GGUFTokenizer:
    """Build the tokenizer of a GGUF file (a path or an open ``GGUFFile``)."""
    gf = source if isinstance(source, GGUFFile) else read_gguf(source)
    model = gf.get("tokenizer.ggml.model")
    tokens = gf.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise DynqError(f"{gf.path}: tokenizer.ggml.model: no tokenizer in GGUF header")
    n = len(tokens)
    types = gf.get("tokenizer.ggml.token_type")
    types = np.full(n, TOKEN_NORMAL, np.int32) if types is None else np.asarray(types)
    pre = gf.get("tokenizer.ggml.pre", "default")
    if model == "gpt2":
        hf = _build_bpe(gf, tokens, types, pre)
        add_bos_default = False
    elif model == "llama":
        hf = _build_spm(gf, tokens, types)
        add_bos_default = True
    else:
        raise DynqError(
            f"{gf.path}: tokenizer.ggml.model: {model!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_MODELS)})"
        )
    add_bos = gf.get("tokenizer.ggml.add_bos_token")
    return GGUFTokenizer(
        hf=hf,
        model=model,
        pre=pre,
        bos_id=_special(gf, "bos_token_id"),
        eos_id=_special(gf, "eos_token_id"),
        add_bos=add_bos_default if add_bos is None else bool(add_bos),
        n_vocab=n,
    )


def _added_tokens(tokens: list[str], types: np.ndarray) -> list[AddedToken]:
    """Control and unknown tokens as special added tokens, user-defined ones as plain added
    tokens (always split out of the text, as llama.cpp's ``tokenizer_st_partition``)."""
    out = []
    for i in np.nonzero((types == TOKEN_CONTROL) | (types == TOKEN_USER_DEFINED))[0]:
        text = tokens[i]
        if not text:
            continue
        special = int(types[i]) == TOKEN_CONTROL
        out.append(AddedToken(text, special=special, normalized=False))
    return out


def _build_bpe(gf: GGUFFile, tokens: list[str], types: np.ndarray, pre: str) -> Tokenizer:
    merges = gf.get("tokenizer.ggml.merges")
    if merges is None:
        raise DynqError(f"{gf.path}: tokenizer.ggml.merges: missing for a gpt2 tokenizer")
    regexes = PRE_TOKENIZER_REGEXES.get(pre)
    if regexes is None:
        raise DynqError(
            f"{gf.path}: tokenizer.ggml.pre: {pre!r} is not supported "
            f"(supported: {', '.join(sorted(PRE_TOKENIZER_REGEXES))})"
        )
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_tokens(_added_tokens(tokens, types))
    return hf


def spm_merges(tokens: list[str], scores: np.ndarray, types: np.ndarray) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-greedy merging: every split (a, b) of a
    piece into two pieces of the vocabulary, ordered by the merged piece's score, best first."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found: list[tuple[float, int, int, int, str, str]] = []
    for i, piece in enumerate(tokens):
        if len(piece) < 2 or types[i] == TOKEN_BYTE:
            continue
        s = float(scores[i])
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            ia = vocab.get(a)
            if ia is None:
                continue
            ib = vocab.get(b)
            if ib is None:
                continue
            found.append((-s, i, ia, ib, a, b))
    found.sort()
    return [(a, b) for *_, a, b in found]


def _build_spm(gf: GGUFFile, tokens: list[str], types: np.ndarray) -> Tokenizer:
    scores = gf.get("tokenizer.ggml.scores")
    scores = np.zeros(len(tokens), np.float32) if scores is None else np.asarray(scores)
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = _special(gf, "unknown_token_id")
    hf = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=spm_merges(tokens, scores, types),
            unk_token=tokens[unk] if unk is not None else None,
            byte_fallback=True,
            fuse_unk=True,
            ignore_merges=False,
        )
    )
    norms = []
    if gf.get("tokenizer.ggml.add_space_prefix", True):
        norms.append(normalizers.Prepend("▁"))
    norms.append(normalizers.Replace(" ", "▁"))
    hf.normalizer = normalizers.Sequence(norms)
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    hf.add_tokens(_added_tokens(tokens, types))
    return hf
