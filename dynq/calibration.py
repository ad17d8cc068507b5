"""A recipe's calibration tokens, and the importance matrix computed from them.

``[[calibration.text]]`` names plain-text files and conversation files (``.jsonl``: one JSON
object a line with a ``messages`` list, as chat datasets are). Instruct models calibrate on
chat-formatted data, so conversations are rendered through the model's own chat template (the
recipe's replacement template when it has one, since that is what its builds will carry),
in the template sandbox, and tokenized with special tokens parsed — the ``<|im_start|>`` a
template writes is the control token the model sees in use. Plain text is tokenized as
llama-imatrix reads its ``-f`` file. The pieces are concatenated in the recipe's order and cut
into ``calibration.chunks`` windows of ``calibration.ctx`` tokens, BOS first when the model
asks for one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dynq.errors import DynqError
from dynq.sources import check_file_ref, sha256_file

if TYPE_CHECKING:
    from dynq.gguf_io import GGUFFile
    from dynq.imatrix_file import Imatrix
    from dynq.recipe import LoadedRecipe


class CalibrationError(DynqError):
    """The recipe's calibration text cannot be read, rendered or is too short."""


@dataclass
class CalibrationTokens:
    tokens: list[int]
    conversations: int


def _conversations(path: Path) -> list[list[dict]]:
    convs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{path}:{i}: not a JSON object: {e.msg}") from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs
        ):
            raise CalibrationError(
                f'{path}:{i}: expected {{"messages": [{{"role": ..., "content": ...}}]}}'
            )
        convs.append(msgs)
    if not convs:
        raise CalibrationError(f"{path}: no conversations")
    return convs


def chat_template(loaded: LoadedRecipe, source: GGUFFile) -> str | None:
    """The template a build of this recipe carries: the recipe's replacement, else the
    source's ``tokenizer.chat_template``."""
    ref = loaded.recipe.model.chat_template
    if ref is not None:
        path = loaded.resolve(ref.path)
        check_file_ref(path, ref.sha256)
        return path.read_text(encoding="utf-8")
    t = source.get("tokenizer.chat_template")
    return t if isinstance(t, str) else None


def calibration_tokens(loaded: LoadedRecipe, source_path: Path) -> CalibrationTokens:
    """Token ids of the recipe's calibration text for the model in the GGUF ``source_path``."""
    from dynq.engine.tokenizer import load_tokenizer
    from dynq.gguf_io import read_gguf
    from dynq.templates.check import tokenizer_info
    from dynq.templates.sandbox import SandboxEnvironment

    source = read_gguf(source_path)

    cal = loaded.recipe.calibration
    if cal is None or not cal.text:
        raise CalibrationError(f"{loaded.path}: calibration.text: the recipe names no text")
    tok = load_tokenizer(source)
    info = tokenizer_info(source)
    tokens: list[int] = []
    n_conv = 0
    env = template = None
    for ref in cal.text:
        path = loaded.resolve(ref.path)
        check_file_ref(path, ref.sha256)
        if path.suffix != ".jsonl":
            tokens += tok.encode(path.read_text(encoding="utf-8"), add_special=False)
            continue
        if env is None:
            env = SandboxEnvironment()
            source_text = chat_template(loaded, source)
            # a base model (no chat template) reads the conversations as plain text
            template = env.compile_template(source_text) if source_text is not None else None
        for i, msgs in enumerate(_conversations(path), 1):
            if template is None:
                text = "\n\n".join(str(m.get("content") or "") for m in msgs)
                tokens += tok.encode(text + "\n\n", add_special=False)
                n_conv += 1
                continue
            ctx = {
                "messages": msgs,
                "add_generation_prompt": False,
                "bos_token": info.bos_token,
                "eos_token": info.eos_token,
            }
            try:
                text = env.render(template, ctx)
            except Exception as e:  # the sandbox's limits, raise_exception, jinja2 errors
                raise CalibrationError(
                    f"{path}: conversation {i}: the chat template failed: {type(e).__name__}: {e}"
                ) from None
            tokens += tok.encode(text, add_special=False, parse_special=True)
            n_conv += 1
    return CalibrationTokens(tokens, n_conv)


def _datasets(loaded: LoadedRecipe) -> list[str]:
    cal = loaded.recipe.calibration
    assert cal is not None
    out = []
    for ref in cal.text:
        sha = ref.sha256 or sha256_file(loaded.resolve(ref.path))
        out.append(f"{ref.path} sha256:{sha}")
    return out


def dataset_label(loaded: LoadedRecipe) -> str:
    """What the imatrix records as its dataset (``imatrix.datasets``): the calibration files
    with their hashes and the settings they were cut with."""
    cal = loaded.recipe.calibration
    assert cal is not None
    return f"{'; '.join(_datasets(loaded))} (ctx {cal.ctx}, chunks {cal.chunks})"


def is_current(loaded: LoadedRecipe, im: Imatrix) -> bool:
    """Whether ``im`` was computed from the recipe's calibration text and settings as they are
    now (same files and hashes, same ``ctx`` and ``chunks``)."""
    cal = loaded.recipe.calibration
    if cal is None or not cal.text:
        return False
    return im.datasets == [dataset_label(loaded)] and im.chunk_size == cal.ctx


def compute_imatrix(
    loaded: LoadedRecipe,
    *,
    device: str = "cpu",
    batch: int = 4,
    progress: Callable[[str], None] | None = None,
) -> Imatrix:
    """The importance matrix of the recipe's calibration text, computed on its source model."""
    from dynq.compare import reference_path
    from dynq.imatrix import collect_imatrix

    cal = loaded.recipe.calibration
    assert cal is not None
    src = reference_path(loaded)
    ct = calibration_tokens(loaded, src)
    need = 2 * cal.ctx
    if len(ct.tokens) < need:
        raise CalibrationError(
            f"{loaded.path}: calibration.text: {len(ct.tokens)} tokens; at least {need} needed "
            f"for calibration.ctx = {cal.ctx}"
        )
    if progress:
        progress(
            f"imatrix: {len(ct.tokens):,} calibration tokens ({ct.conversations} conversations), "
            f"{min(cal.chunks, len(ct.tokens) // cal.ctx)} chunks of {cal.ctx}"
        )
    return collect_imatrix(
        src,
        ct.tokens,
        ctx=cal.ctx,
        chunks=cal.chunks,
        device=device,
        batch=batch,
        dataset=dataset_label(loaded),
        progress=progress,
    )


def recipe_imatrix(
    loaded: LoadedRecipe,
    out: Path | None = None,
    device: str = "cpu",
    say: Callable[[str], None] = lambda m: None,
) -> tuple[Imatrix | None, Path | None]:
    """The recipe's importance matrix: the imported ``calibration.imatrix`` (hash-checked), or
    the one computed from ``calibration.text`` at ``<out>/<name>.imatrix.gguf`` — computed now
    when missing or made from other calibration settings. ``(None, None)`` without either."""
    from dynq.imatrix_file import load_imatrix, save_imatrix
    from dynq.outputs import imatrix_path

    cal = loaded.recipe.calibration
    if cal is not None and cal.imatrix is not None:
        path = loaded.resolve(cal.imatrix.path)
        check_file_ref(path, cal.imatrix.sha256)
        return load_imatrix(path), path
    if cal is None or not cal.text:
        return None, None
    path = imatrix_path(loaded, out)
    if path.exists():
        im = load_imatrix(path)
        if is_current(loaded, im):
            return im, path
        say(f"{path}: made from other calibration settings; computing it again")
    else:
        say(f"computing the importance matrix from the calibration text: {path}")
    im = compute_imatrix(loaded, device=device, progress=say)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_imatrix(path, im)
    return im, path
