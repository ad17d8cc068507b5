"""Check a chat template: lint it for llama.cpp's engines, render it in the sandbox on the fixed
conversations, and check its BOS handling and special tokens against the GGUF's tokenizer."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError

from dynq.errors import DynqError
from dynq.gguf_io import GGUFFile, read_gguf
from dynq.templates.conversations import contexts
from dynq.templates.engines import ENGINES
from dynq.templates.lint import lint
from dynq.templates.report import Finding, RenderError, TemplateReport
from dynq.templates.sandbox import (
    DEFAULT_LIMITS,
    Limits,
    RaisedException,
    RenderLimit,
    SandboxEnvironment,
)

ALL_ENGINES = ("jinja", "minja")
MAX_TEMPLATE_CHARS = 1 << 20

# token types (gguf TokenType / llama.cpp LLAMA_TOKEN_TYPE_*): 3 CONTROL, 4 USER_DEFINED
SPECIAL_TYPES = (3, 4)

# what special tokens look like: <|x|>, DeepSeek's <｜x｜>, <start_of_turn>, [INST]
_SPECIAL = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"
    r"|<｜[^<>｜]{1,64}｜>"
    r"|</?[a-z][a-z0-9]*(?:_[a-z0-9]+)+>"
    r"|\[/?[A-Z][A-Z_]{2,31}\]"
)


class TemplateCheckError(DynqError):
    """A chat template failed its check (``dynq validate``/``build`` refuse it)."""


@dataclass
class TokenizerInfo:
    """What the template check needs from a GGUF's tokenizer metadata."""

    bos_token: str
    eos_token: str
    add_bos: bool
    special: set[str] | None  # CONTROL and USER_DEFINED token texts
    templates: dict[str, str]  # "tokenizer.chat_template[.name]" -> template


def tokenizer_info(f: GGUFFile) -> TokenizerInfo:
    tokens = f.get("tokenizer.ggml.tokens")
    types = f.get("tokenizer.ggml.token_type")
    tokens = tokens if isinstance(tokens, list) else []
    types = types if isinstance(types, list) else []

    def text(key: str) -> str:
        i = f.get(key)
        return str(tokens[i]) if isinstance(i, int) and 0 <= i < len(tokens) else ""

    special = {str(t) for t, ty in zip(tokens, types, strict=False) if ty in SPECIAL_TYPES}
    add_bos = f.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # llama.cpp's default by vocabulary type: SPM adds BOS, BPE does not
        add_bos = f.get("tokenizer.ggml.model") == "llama"
    templates = {
        k: str(v.value)
        for k, v in f.fields.items()
        if k == "tokenizer.chat_template" or k.startswith("tokenizer.chat_template.")
    }
    return TokenizerInfo(
        bos_token=text("tokenizer.ggml.bos_token_id"),
        eos_token=text("tokenizer.ggml.eos_token_id"),
        add_bos=bool(add_bos),
        special=special if tokens and types else None,
        templates=templates,
    )


def _literals(tree: nodes.Template) -> Iterable[str]:
    for node in tree.find_all((nodes.Const, nodes.TemplateData)):
        if isinstance(node, nodes.TemplateData):
            yield node.data
        elif isinstance(node.value, str):
            yield node.value


def _locate(source: str, text: str) -> tuple[int | None, int | None]:
    i = source.find(text)
    if i < 0:
        return None, None
    line = source.count("\n", 0, i) + 1
    return line, i - (source.rfind("\n", 0, i) + 1) + 1


def check_template(
    source: str,
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_bos: bool = False,
    vocab: set[str] | None = None,
    engines: Iterable[str] = ALL_ENGINES,
    name: str = "template",
    limits: Limits = DEFAULT_LIMITS,
) -> TemplateReport:
    """Check one chat template.

    ``vocab`` is the set of the model's special tokens (CONTROL and USER_DEFINED), or None when
    unknown; ``engines`` those of ``"jinja"`` (llama.cpp common/jinja) and ``"minja"`` that must
    run it. Never raises for a bad template: everything is in the report.
    """
    engines = list(engines)
    for e in engines:
        if e not in ENGINES:
            raise ValueError(f"unknown template engine '{e}' (known: {', '.join(ENGINES)})")
    sha = hashlib.sha256(source.encode()).hexdigest()
    rep = TemplateReport(name=name, engines=engines, sha256=sha)
    if len(source) > MAX_TEMPLATE_CHARS:
        rep.findings.append(
            Finding(
                "error",
                None,
                None,
                None,
                f"template is {len(source):,} characters (limit {MAX_TEMPLATE_CHARS:,})",
                code="size",
            )
        )
        return rep
    env = SandboxEnvironment(limits)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as e:
        rep.findings.append(
            Finding(
                "error",
                e.lineno,
                None,
                None,
                _one_line(f"syntax error: {e.message}"),
                code="syntax",
            )
        )
        return rep
    rep.findings += lint(source, tree, engines)
    literals = list(_literals(tree))
    try:
        template = env.compile_template(source)
    except TemplateSyntaxError as e:  # pragma: no cover - parse succeeded above
        rep.findings.append(
            Finding("error", e.lineno, None, None, _one_line(f"syntax error: {e.message}"))
        )
        return rep
    except (RenderLimit, SecurityError) as e:  # constant folding ran into a limit
        rep.render_errors.append(RenderError("(compiling)", f"stopped: {e}"))
        return rep

    deadline = time.monotonic() + limits.total_seconds  # all the renders together
    object_args = False
    for conv_name, _conv, ctx in contexts(bos_token, eos_token):
        rep.conversations += 1
        try:
            try:
                rep.renders[conv_name] = env.render(
                    template, _with_object_args(ctx) if object_args else ctx, deadline
                )
            except (TemplateError, TypeError, ValueError, AttributeError) as e:
                # llama.cpp passes tool-call arguments as objects to templates that need them
                # (common/jinja/caps.cpp: supports_object_arguments): try that before failing
                if object_args or not _has_tool_calls(ctx):
                    raise
                try:
                    rep.renders[conv_name] = env.render(template, _with_object_args(ctx), deadline)
                except (TemplateError, TypeError, ValueError, AttributeError):
                    raise e from None
                object_args = True
        except RaisedException as e:
            rep.render_errors.append(
                RenderError(
                    conv_name, _one_line(f"template refused it: raise_exception('{e}')"), "warning"
                )
            )
        except RenderLimit as e:
            rep.render_errors.append(RenderError(conv_name, f"stopped: {e}"))
            break  # a runaway template: no point in the other conversations
        except SecurityError as e:
            rep.render_errors.append(RenderError(conv_name, f"stopped: {e}"))
            break
        except RecursionError:
            rep.render_errors.append(RenderError(conv_name, "stopped: recursion too deep"))
            break
        except Exception as e:
            rep.render_errors.append(RenderError(conv_name, _one_line(f"{type(e).__name__}: {e}")))

    _check_bos(rep, bos_token, add_bos)
    _check_special(rep, source, literals, vocab)
    return rep


def _one_line(msg: str, limit: int = 300) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _has_tool_calls(ctx: dict) -> bool:
    return any(m.get("tool_calls") for m in ctx.get("messages", []))


def _with_object_args(ctx: dict) -> dict:
    """The same variables with tool-call arguments as objects instead of JSON strings."""
    out = dict(ctx)
    out["messages"] = []
    for m in ctx.get("messages", []):
        if m.get("tool_calls"):
            m = dict(m)
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c["function"])
                if isinstance(fn.get("arguments"), str):
                    fn["arguments"] = json.loads(fn["arguments"])
                calls.append({**c, "function": fn})
            m["tool_calls"] = calls
        out["messages"].append(m)
    return out


def _check_bos(rep: TemplateReport, bos_token: str, add_bos: bool) -> None:
    if not bos_token:
        return
    doubled = [n for n, text in rep.renders.items() if add_bos and text.startswith(bos_token)]
    if doubled:
        rep.findings.append(
            Finding(
                "warning",
                None,
                None,
                None,
                f"double BOS: the template emits {bos_token!r} and the GGUF sets "
                f"tokenizer.ggml.add_bos_token, so the tokenizer adds another (in {len(doubled)} "
                "of the renders; llama.cpp since common/jinja strips one, minja-era builds and "
                "other runtimes do not)",
                "drop {{ bos_token }} from the template, or set add_bos_token false",
                code="bos",
            )
        )


def _check_special(
    rep: TemplateReport, source: str, literals: list[str], vocab: set[str] | None
) -> None:
    candidates = sorted({m.group(0) for lit in literals for m in _SPECIAL.finditer(lit)})
    emitted = [c for c in candidates if any(c in text for text in rep.renders.values())]
    if vocab is None:
        if emitted:
            rep.findings.append(
                Finding(
                    "info",
                    None,
                    None,
                    None,
                    f"vocabulary unknown: {len(emitted)} special token(s) the template emits "
                    "were not checked",
                    code="vocab",
                )
            )
        return
    for tok in emitted:
        if tok not in vocab:
            line, col = _locate(source, tok)
            rep.findings.append(
                Finding(
                    "error",
                    line,
                    col,
                    None,
                    f"the template emits {tok!r}, which is not a special token of the vocabulary: "
                    "it would be tokenized as plain text",
                    "use the model's own token text (tokenizer.ggml.tokens, CONTROL/USER_DEFINED)",
                    code="vocab",
                )
            )


# -- GGUF files and recipes -------------------------------------------------------------------


def check_gguf(
    f: GGUFFile, *, engines: Iterable[str] = ALL_ENGINES, name: str | None = None
) -> list[TemplateReport]:
    """Check every chat template a GGUF carries (``tokenizer.chat_template`` and named ones)."""
    info = tokenizer_info(f)
    label = name or str(f.path)
    if not info.templates:
        rep = TemplateReport(name=label, engines=list(engines), sha256="")
        rep.findings.append(
            Finding(
                "info",
                None,
                None,
                None,
                "no tokenizer.chat_template: llama.cpp falls back to its built-in ChatML",
                "give the recipe a model.chat_template",
                code="missing",
            )
        )
        return [rep]
    return [
        check_template(
            text,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            add_bos=info.add_bos,
            vocab=info.special,
            engines=engines,
            name=label if key == "tokenizer.chat_template" else f"{label}[{key}]",
        )
        for key, text in info.templates.items()
    ]


def local_source(loaded) -> Path | None:
    """The recipe's source GGUF if it is on this machine without a download, else None."""
    from dynq.sources import resolve_source

    model = loaded.recipe.model
    ref = model.source
    if ref is None:
        inv = loaded.resolve(model.inventory)
        return inv if inv.suffix == ".gguf" and inv.exists() else None
    if ref.startswith("hf://"):
        try:
            from huggingface_hub import try_to_load_from_cache

            body = ref.removeprefix("hf://")
            rev = None
            if "@" in body:
                body, rev = body.rsplit("@", 1)
            owner, repo, file = body.split("/", 2)
            hit = try_to_load_from_cache(f"{owner}/{repo}", file, revision=rev)
        except Exception:
            return None
        return Path(hit) if isinstance(hit, str) else None
    try:
        return resolve_source(ref, loaded.dir)  # no sha256: the build checks it
    except DynqError:
        return None


def check_recipe(
    loaded,
    *,
    engines: Iterable[str] = ALL_ENGINES,
    source: GGUFFile | None = None,
) -> tuple[list[TemplateReport], bool]:
    """Check the template a build of this recipe would ship: the recipe's replacement
    (``model.chat_template``, its sha256 checked) or the source GGUF's own. Returns the reports
    and whether the check was complete (False: the source GGUF is not on this machine)."""
    from dynq.provenance import chat_template_text
    from dynq.sources import check_file_ref

    model = loaded.recipe.model
    if source is None:
        path = local_source(loaded)
        if path is not None:
            try:
                source = read_gguf(path)
            except DynqError:
                source = None
    info = tokenizer_info(source) if source is not None else None
    if model.chat_template is not None:
        ref = model.chat_template
        check_file_ref(loaded.resolve(ref.path), ref.sha256)
        text = chat_template_text(loaded) or ""
        rep = check_template(
            text,
            bos_token=info.bos_token if info else "",
            eos_token=info.eos_token if info else "",
            add_bos=info.add_bos if info else False,
            vocab=info.special if info else None,
            engines=engines,
            name=str(loaded.resolve(ref.path)),
        )
        return [rep], True
    if source is None:
        return [], False
    return check_gguf(source, engines=engines, name=f"{model.source}"), True


def require_ok(reports: list[TemplateReport], warn: Callable[[str], None]) -> None:
    """Print warnings through ``warn``; raise TemplateCheckError naming the first error."""
    errors: list[str] = []
    for rep in reports:
        for severity, line in rep.entries(infos=False):
            (errors.append if severity == "error" else warn)(line)
    if errors:
        more = f" (and {len(errors) - 1} more: dynq template check)" if len(errors) > 1 else ""
        raise TemplateCheckError(f"chat template: {errors[0]}{more}")


def check_for_build(
    loaded,
    warn: Callable[[str], None],
    source: GGUFFile | None = None,
) -> bool:
    """The check ``dynq validate`` and ``dynq build`` run: raises on errors, warns warnings;
    returns whether the template a build would ship was checked (False: source not local)."""
    reports, complete = check_recipe(loaded, source=source)
    require_ok(reports, warn)
    return complete
