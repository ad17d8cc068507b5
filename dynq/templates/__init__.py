"""Chat templates: check that llama.cpp's template engines can run them, in a bounded sandbox.

``check_template(source, *, bos_token, eos_token, add_bos, vocab, engines) -> TemplateReport``
is the one entry point the CLI (``dynq template check``), ``dynq validate``/``build`` and the
TUI share; ``check_gguf`` and ``check_recipe`` find the template and tokenizer facts for it.
See docs/templates.md.
"""

from dynq.templates.check import (
    ALL_ENGINES,
    TemplateCheckError,
    TokenizerInfo,
    check_for_build,
    check_gguf,
    check_recipe,
    check_template,
    require_ok,
    tokenizer_info,
)
from dynq.templates.engines import ENGINES
from dynq.templates.report import Finding, RenderError, TemplateReport
from dynq.templates.sandbox import Limits

__all__ = [
    "ALL_ENGINES",
    "ENGINES",
    "Finding",
    "Limits",
    "RenderError",
    "TemplateCheckError",
    "TemplateReport",
    "TokenizerInfo",
    "check_for_build",
    "check_gguf",
    "check_recipe",
    "check_template",
    "require_ok",
    "tokenizer_info",
]
