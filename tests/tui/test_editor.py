"""The editing model without Textual: rules from selections, undo/redo, validation, saving."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynq.errors import RecipeError
from dynq.recipe import dump_recipe, load_recipe
from tui.editor import Editor, Scope, comment_line
from tui.model import (
    ComparePoint,
    FilterError,
    layer_map,
    pareto_front,
    parse_filter,
    read_eval,
    scan_registry,
)


def _types(ed: Editor, target: str) -> dict[str, str]:
    return {t.name: t.type.name for t in ed.plan(target).tensors}


def test_set_type_exact_tensors_becomes_a_layer_rule(recipe_path: Path):
    ed = Editor.open(recipe_path)
    assert not ed.dirty
    desc = ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0")
    assert "blk.*.ffn_up.weight [0] → q8_0" in desc
    rule = ed.recipe.targets["mix"].rules[-1]
    assert (rule.match, rule.layers, rule.type) == ("blk.*.ffn_up.weight", "0", "q8_0")
    types = _types(ed, "mix")
    assert types["blk.0.ffn_up.weight"] == "Q8_0"
    assert types["blk.1.ffn_up.weight"] == "Q4_1"
    assert ed.dirty
    assert ed.plan("mix").file_size > ed.saved_plan("mix").file_size


def test_scopes_kind_and_layer_range(recipe_path: Path):
    ed = Editor.open(recipe_path)
    ed.set_type("mix", ["blk.0.ffn_gate.weight"], "q5_0", Scope.KIND)
    assert ed.recipe.targets["mix"].rules[-1].layers is None
    assert {_types(ed, "mix")[f"blk.{i}.ffn_gate.weight"] for i in (0, 1)} == {"Q5_0"}
    ed.set_type("mix", ["blk.0.attn_q.weight"], "q8_0", Scope.LAYERS, "1")
    assert _types(ed, "mix")["blk.1.attn_q.weight"] == "Q8_0"
    assert _types(ed, "mix")["blk.0.attn_q.weight"] == "Q4_1"
    # several tensors of two kinds and both layers: one compact rule per kind
    ed.set_type(
        "mix", ["blk.0.attn_k.weight", "blk.1.attn_k.weight", "blk.1.attn_q.weight"], "q6_k"
    )
    last = [(r.match, r.layers) for r in ed.recipe.targets["mix"].rules[-2:]]
    assert sorted(last) == [("blk.*.attn_k.weight", "0-1"), ("blk.*.attn_q.weight", "1")]


def test_failed_rule_is_not_applied(recipe_path: Path):
    ed = Editor.open(recipe_path)
    before = ed.recipe
    with pytest.raises(RecipeError, match=r"layers: '0-5' is outside the model \(layers 0-1\)"):
        ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0", Scope.LAYERS, "0-5")
    with pytest.raises(RecipeError, match="never quantizes"):
        ed.set_type("mix", ["blk.0.attn_norm.weight"], "q8_0")
    with pytest.raises(RecipeError, match="unknown GGML type 'q4_kk'"):
        ed.set_type("mix", ["blk.0.ffn_up.weight"], "q4_kk")
    with pytest.raises(RecipeError, match="bad layer range"):
        ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0", Scope.LAYERS, "x")
    assert ed.recipe is before
    assert not ed.can_undo and not ed.dirty


def test_step_up_and_down_the_ladder(recipe_path: Path):
    ed = Editor.open(recipe_path)
    ed.step("mix", ["blk.0.attn_v.weight"], +1)  # Q8_0 -> BF16
    assert _types(ed, "mix")["blk.0.attn_v.weight"] == "BF16"
    ed.step("mix", ["blk.0.attn_v.weight"], -2)  # BF16 -> Q6_K
    assert _types(ed, "mix")["blk.0.attn_v.weight"] == "Q6_K"
    # the second step rewrote the same rule instead of adding one
    assert [r.layers for r in ed.recipe.targets["mix"].rules].count("0") == 1


def test_undo_redo(recipe_path: Path):
    ed = Editor.open(recipe_path)
    ed.set_type("mix", ["blk.1.ffn_up.weight"], "q8_0")
    ed.set_type("mix", ["blk.1.ffn_up.weight"], "q6_k")
    assert _types(ed, "mix")["blk.1.ffn_up.weight"] == "Q6_K"
    assert ed.undo() is not None
    assert _types(ed, "mix")["blk.1.ffn_up.weight"] == "Q8_0"
    ed.undo()
    assert _types(ed, "mix")["blk.1.ffn_up.weight"] == "Q4_1"
    assert not ed.dirty and ed.undo() is None
    ed.redo()
    assert _types(ed, "mix")["blk.1.ffn_up.weight"] == "Q8_0"
    ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0")  # a new edit drops the redo stack
    assert not ed.can_redo


def test_existing_rule_changed_in_place_keeps_note_unless_overridden(recipe_path: Path):
    ed = Editor.open(recipe_path)
    ed.set_type("mix", ["blk.0.attn_v.weight"], "q6_k", Scope.KIND)
    rules = ed.recipe.targets["mix"].rules
    assert len(rules) == 2 and rules[0].type == "q6_k" and rules[0].note == "attn_v is small"
    # ffn_down of all layers: the rule for layer 1 comes later, so the new rule goes last
    ed.set_type("mix", ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"], "q8_0", Scope.KIND)
    assert {_types(ed, "mix")[f"blk.{i}.ffn_down.weight"] for i in (0, 1)} == {"Q8_0"}


def test_notes_and_delete(recipe_path: Path):
    ed = Editor.open(recipe_path)
    label = ed.tensor("mix", "blk.0.attn_v.weight").rule
    assert label == "targets.mix.rules[0]"
    ed.set_note("mix", label, "sensitive")
    assert ed.tensor("mix", "blk.0.attn_v.weight").note == "sensitive"
    ed.set_note("mix", "rules[0]", "")
    assert ed.recipe.rules[0].note is None
    with pytest.raises(RecipeError, match="not a rule"):
        ed.set_note("mix", "base", "x")
    ed.delete_rule("mix", label)
    assert ed.tensor("mix", "blk.0.attn_v.weight").type.name == "Q4_1"
    ed.delete_rule("mix", "rules[0]")  # a shared rule: every target is re-planned
    assert ed.tensor("Q4_0", "token_embd.weight").rule == "llama.cpp:Q4_0"


def test_save_writes_canonical_toml_and_diff(recipe_path: Path):
    ed = Editor.open(recipe_path)
    ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0", note="test")
    d = ed.diff()
    assert d.version_warning and not d.empty
    ed.bump_version()
    ed.save()
    loaded = load_recipe(recipe_path)
    assert loaded.text == dump_recipe(loaded.recipe, recipe_path)
    assert loaded.recipe.version == "1.0.1"
    assert (
        'match = "blk.*.ffn_up.weight", layers = "0", type = "q8_0", note = "test"' in loaded.text
    )
    assert not ed.dirty
    assert ed.diff().empty


def test_save_refuses_comments_and_concurrent_change(recipe_path: Path):
    text = recipe_path.read_text()
    ed = Editor.open(recipe_path)
    ed.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0")
    recipe_path.write_text(text + "# someone else\n")
    with pytest.raises(RecipeError, match="changed on disk"):
        ed.save()
    assert recipe_path.read_text() == text + "# someone else\n"
    ed2 = Editor.open(recipe_path)
    ed2.set_type("mix", ["blk.0.ffn_up.weight"], "q8_0")
    with pytest.raises(RecipeError, match=r"tiny.toml:\d+: the file has comments"):
        ed2.save()
    assert recipe_path.read_text() == text + "# someone else\n"
    assert comment_line('a = "#no"\n') is None and comment_line("a = 1 # yes\n") == 1


def test_filter_language(recipe_path: Path):
    ed = Editor.open(recipe_path)
    plan = ed.plan("mix")

    def names(text: str) -> list[str]:
        f = parse_filter(text)
        return [t.name for t in plan.tensors if f(t)]

    assert names("kind:attn_v") == ["blk.0.attn_v.weight", "blk.1.attn_v.weight"]
    assert names("ffn_* layer:1 type:q5_0") == ["blk.1.ffn_down.weight"]
    assert names("blk.0.*norm") == ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"]
    assert names("rule:targets.mix.rules[1]") == ["blk.1.ffn_down.weight"]
    assert names("token") == ["token_embd.weight"]
    assert len(names("rule:stock")) == 0 and len(names("rule:base")) == 11
    with pytest.raises(FilterError):
        parse_filter("layer:x")
    with pytest.raises(FilterError):
        parse_filter("colour:red")


def test_layer_map_and_registry(workdir: Path):
    ed = Editor.open(workdir / "registry" / "tiny.toml")
    m = layer_map(ed.plan("mix"))
    assert m.n_layers == 2 and "attn_norm.weight" not in m.kinds
    assert m.cells[("attn_v.weight", 1)].type.name == "Q8_0"
    assert [t.name for t in m.other] == ["token_embd.weight"]
    (workdir / "registry" / "broken.toml").write_text("name = 1\n")
    entries = scan_registry(workdir / "registry", workdir / "build")
    assert [e.name for e in entries] == ["broken", "tiny"]
    assert entries[0].error and entries[1].targets == ["Q4_0", "mix"]


def test_eval_reports_and_pareto(workdir: Path):
    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    (d / "tiny-mix.eval.json").write_text('{"mean_kld": 0.02, "p99_kld": 0.3, "ppl": "x"}')
    (d / "tiny-Q4_0.eval.json").write_text("not json")
    assert read_eval(workdir / "build", "tiny", "mix") == {"mean_kld": 0.02, "p99_kld": 0.3}
    assert read_eval(workdir / "build", "tiny", "Q4_0") == {}
    pts = [
        ComparePoint("a", 100, 2.0, {"mean_kld": 0.5}),
        ComparePoint("b", 200, 4.0, {"mean_kld": 0.1}),
        ComparePoint("c", 300, 5.0, {"mean_kld": 0.2}),  # bigger and worse than b
        ComparePoint("d", 150, 3.0, {}),
    ]
    pareto_front(pts)
    assert [p.pareto for p in pts] == [True, True, False, False]


def test_reformat_is_reported(recipe_path: Path):
    assert not Editor.open(recipe_path).reformats
    recipe_path.write_text(recipe_path.read_text().replace('version = "1.0.0"', "version='1.0.0'"))
    assert Editor.open(recipe_path).reformats
