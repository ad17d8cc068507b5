"""Token ids from the GGUF-built tokenizer equal llama.cpp's (``token_ids.json``, produced by
``tests/data/engine/make_token_ids.py`` with ``llama-tokenize``)."""

from __future__ import annotations

import hashlib
import json

import pytest

from dynq.engine.tokenizer import load_tokenizer
from tests.engine.conftest import DATA, model_path

REF = json.loads((DATA / "token_ids.json").read_text())


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def tok(request):
    return request.param, load_tokenizer(model_path(request, request.param))


@pytest.mark.parametrize("text", sorted(REF["texts"]))
def test_ids_equal_llama_cpp(tok, text):
    name, tk = tok
    raw = (DATA / "texts" / text).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == REF["texts"][text]
    ids = tk.encode(raw.decode("utf-8"))
    ref = REF["ids"][name][text]
    assert len(ids) == len(ref)
    assert ids == ref


def test_bos_handling(tok):
    name, tk = tok
    ids = tk.encode("Hello world")
    if name == "gemma3":
        assert tk.add_bos and ids[0] == tk.bos_id == 2
    else:
        assert not tk.add_bos and ids[0] != tk.bos_id
    assert tk.encode("Hello world", add_special=False) == [i for i in ids if i != tk.bos_id]
    assert tk.decode(tk.encode("Hello world", add_special=False)) == "Hello world"


def test_control_tokens_only_with_parse_special(tok):
    name, tk = tok
    text = "<|im_start|>" if name == "smollm2" else "<start_of_turn>"
    special = tk.encode(text, add_special=False, parse_special=True)
    plain = tk.encode(text, add_special=False, parse_special=False)
    assert len(special) == 1
    assert len(plain) > 1
