"""``dynq build``: outputs equal the Plan, read back and dequantized; safety; imatrix import."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynq import kernels, qtypes
from dynq.build import Builder, BuildError, BuildOptions
from dynq.errors import SourceError
from dynq.gguf_io import inventory_from_gguf, read_gguf
from dynq.imatrix_file import Imatrix, load_imatrix, save_imatrix
from dynq.plan import Resolver
from dynq.recipe import load_recipe
from dynq.sources import sha256_file
from tests import tiny_model
from tests.conftest import dynq_command

RECIPE = """\
schema_version = 1
name = "tiny"
version = "1.0.0"
description = "tiny llama"

[model]
arch = "llama"
source = "tiny-f32.gguf"
inventory = "tiny.json"

[[rules]]
match = "token_embd.weight"
type = "q8_0"

[targets.Q4_0]
extends = "llama.cpp:Q4_0"

[targets.mix]
base = "q4_1"
[[targets.mix.rules]]
match = "blk.*.attn_v.weight"
type = "q8_0"
[[targets.mix.rules]]
match = "blk.*.ffn_down.weight"
layers = "1"
type = "q5_0"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    src = tiny_model.write(tmp_path / "tiny-f32.gguf")
    inventory_from_gguf(src).save(tmp_path / "tiny.json")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    return recipe


def _build(recipe: Path, **kw) -> list:
    opts = BuildOptions(out=recipe.parent / "out", **kw)
    return Builder(load_recipe(recipe), opts).run()


def test_outputs_equal_plan_and_read_back(tiny: Path):
    reports = _build(tiny)
    src = tiny_model.tensors()
    resolver = Resolver(load_recipe(tiny))
    for rep in reports:
        path = tiny.parent / "out" / rep.file
        plan = resolver.plan(rep.target, imatrix=None)
        assert path.stat().st_size == plan.file_size == rep.file_size
        f = read_gguf(path)
        assert [(t.name, t.shape, t.type.name) for t in f.tensors] == [
            (t.name, t.shape, t.type.name) for t in plan.tensors
        ]
        for t in f.tensors:
            x = kernels.dequantize(f.raw(t), t.type.name, t.shape)
            ref = src[t.name]
            rel = np.linalg.norm(x.reshape(ref.shape) - ref) / np.linalg.norm(ref)
            assert rel < 0.12, (t.name, t.type.name, rel)
    by = {t.name: t.type.name for t in read_gguf(tiny.parent / "out" / "tiny-mix.gguf").tensors}
    assert by["blk.0.attn_v.weight"] == "Q8_0"
    assert by["blk.1.ffn_down.weight"] == "Q5_0"
    assert by["blk.0.ffn_down.weight"] == "Q4_1"
    assert by["blk.0.attn_norm.weight"] == "F32"


def test_metadata_kept_and_provenance(tiny: Path):
    _build(tiny, targets=["mix"])
    src = read_gguf(tiny.parent / "tiny-f32.gguf")
    out = read_gguf(tiny.parent / "out" / "tiny-mix.gguf")
    for key, kv in src.fields.items():
        if key not in ("general.file_type", "general.quantization_version"):
            assert out.fields[key].value == kv.value, key
    loaded = load_recipe(tiny)
    assert out.get("dynq.recipe.name") == "tiny"
    assert out.get("dynq.recipe.version") == "1.0.0"
    assert out.get("dynq.recipe.sha256") == loaded.sha256
    assert out.get("dynq.target") == "mix"
    assert out.get("general.file_type") == 3  # MOSTLY_Q4_1: dominant type of the layers
    assert out.get("tokenizer.chat_template") == "{{ messages[0]['content'] }}"


def test_deterministic(tiny: Path):
    a = _build(tiny, targets=["mix"])[0].sha256
    b = _build(tiny, targets=["mix"], force=True)[0].sha256
    assert a == b


def test_report_hash_and_errors_match_the_file(tiny: Path):
    """The sha256 hashed while writing is the file's; each tensor's weighted error, measured
    while quantizing, is the one of the bytes in the file."""
    (rep,) = _build(tiny, targets=["mix"])
    path = tiny.parent / "out" / rep.file
    assert rep.sha256 == sha256_file(path)
    f = read_gguf(path)
    src = tiny_model.tensors()
    errs = {t.name: t.rel_error for t in rep.tensors}
    for t in f.tensors:
        if not qtypes.get(t.type.name).is_quantized:
            assert errs[t.name] is None
            continue
        rows = src[t.name].reshape(-1, t.shape[0])
        num, den = kernels.weighted_error(rows, f.raw(t), t.type.name)
        assert errs[t.name] == round((num / den) ** 0.5, 6), t.name


def test_existing_output_needs_force(tiny: Path):
    _build(tiny, targets=["mix"])
    with pytest.raises(BuildError, match="already exists \\(use --force"):
        _build(tiny, targets=["mix"])


def test_interrupted_build_leaves_nothing(tiny: Path):
    builder = Builder(load_recipe(tiny), BuildOptions(out=tiny.parent / "out"))

    def interrupt(target: str, done: int, nbytes: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        builder.run(interrupt)
    out = tiny.parent / "out"
    assert list(out.iterdir()) == []  # no final file, no temp file
    assert len(_build(tiny)) == 2  # the rerun succeeds


def test_source_must_match_inventory(tiny: Path):
    tiny_model.write(tiny.parent / "tiny-f32.gguf", seed=1)  # same shapes: fine
    _build(tiny, targets=["mix"])
    inv = json.loads((tiny.parent / "tiny.json").read_text())
    inv["tensors"][1]["shape"] = [128]
    (tiny.parent / "tiny.json").write_text(json.dumps(inv))
    with pytest.raises(
        SourceError, match="does not match the recipe's inventory .*blk.0.attn_norm"
    ):
        _build(tiny, force=True)


def test_source_sha256_checked(tiny: Path):
    tiny.write_text(
        RECIPE.replace(
            'inventory = "tiny.json"', 'inventory = "tiny.json"\nsource_sha256 = "' + "0" * 64 + '"'
        )
    )
    with pytest.raises(SourceError, match="sha256 mismatch"):
        _build(tiny)


def test_quantized_source_needs_flag(tiny: Path):
    _build(tiny, targets=["Q4_0"])
    q = tiny.parent / "out" / "tiny-Q4_0.gguf"
    inventory_from_gguf(q).save(tiny.parent / "tiny.json")
    tiny.write_text(RECIPE.replace("tiny-f32.gguf", "out/tiny-Q4_0.gguf"))
    with pytest.raises(SourceError, match="source is quantized .*source_quantized = true"):
        _build(tiny, targets=["mix"])
    tiny.write_text(
        RECIPE.replace("tiny-f32.gguf", "out/tiny-Q4_0.gguf").replace(
            'inventory = "tiny.json"', 'inventory = "tiny.json"\nsource_quantized = true'
        )
    )
    warnings: list[str] = []
    Builder(
        load_recipe(tiny),
        BuildOptions(targets=["mix"], out=tiny.parent / "o2"),
        warn=warnings.append,
    ).run()
    assert any("dequantized to F32" in w for w in warnings)


def _imatrix_for(seed: int = 3) -> Imatrix:
    rng = np.random.default_rng(seed)
    sums, counts = {}, {}
    for name, arr in tiny_model.tensors().items():
        if arr.ndim == 2 and name != "token_embd.weight":
            sums[name] = (rng.random((1, arr.shape[1])) ** 4 * 100).astype(np.float32)
            counts[name] = np.array([64])
    return Imatrix(sums, counts, ["cal.txt"], 4, 16)


def _write_legacy(path: Path, im: Imatrix) -> None:
    """llama-imatrix's legacy .dat layout (save_imatrix_legacy in tools/imatrix)."""
    with path.open("wb") as f:
        f.write(struct.pack("<i", len(im.sums)))
        for name in sorted(im.sums):
            ncall = 2
            vals = (im.sums[name] / im.counts[name][0] * ncall).astype("<f4")
            f.write(struct.pack("<i", len(name)) + name.encode())
            f.write(struct.pack("<ii", ncall, vals.size) + vals.tobytes())
        f.write(struct.pack("<i", im.chunk_count))
        f.write(struct.pack("<i", 7) + b"cal.txt")


def test_imatrix_gguf_and_legacy_agree_and_are_recorded(tiny: Path):
    im = _imatrix_for()
    save_imatrix(tiny.parent / "im.gguf", im)
    _write_legacy(tiny.parent / "im.dat", im)
    a, b = load_imatrix(tiny.parent / "im.gguf"), load_imatrix(tiny.parent / "im.dat")
    for name in im.sums:
        np.testing.assert_allclose(a.importance(name), b.importance(name), rtol=1e-6)
    assert b.datasets == ["cal.txt"] and b.chunk_count == 4

    plain = _build(tiny, targets=["mix"])[0]
    with_im = Builder(
        load_recipe(tiny),
        BuildOptions(targets=["mix"], out=tiny.parent / "o2", imatrix=tiny.parent / "im.dat"),
    ).run()[0]
    assert with_im.sha256 != plain.sha256
    out = read_gguf(tiny.parent / "o2" / "tiny-mix.gguf")
    assert out.get("quantize.imatrix.file") == "im.dat"
    assert out.get("quantize.imatrix.entries_count") == len(im.sums)
    assert out.get("quantize.imatrix.chunks_count") == 4
    assert with_im.file_size == out.path.stat().st_size
    # importance weights lower the weighted error they are meant to lower
    e_plain = {t.name: t.rel_error for t in plain.tensors}
    better = [
        t.rel_error <= e_plain[t.name] * 1.0001
        for t in with_im.tensors
        if t.rel_error is not None and t.name in im.sums
    ]
    assert sum(better) >= 0.9 * len(better)


def test_types_needing_imatrix_refuse_without(tiny: Path):
    tiny.write_text(RECIPE + '\n[targets.low]\nbase = "iq2_xxs"\n')
    with pytest.raises(BuildError, match="needs an importance matrix"):
        _build(tiny, targets=["low"])


def test_cli_build_json(tiny: Path, dynq):
    r = dynq("build", tiny, "--target", "mix", "--json", "--out", tiny.parent / "cli")
    assert r.code == 0, r.err
    rep = json.loads(r.out)[0]
    path = tiny.parent / "cli" / "tiny-mix.gguf"
    assert rep["sha256"] == sha256_file(path)
    assert rep["file_size"] == rep["predicted_size"] == path.stat().st_size
    assert json.loads((tiny.parent / "cli" / "tiny-mix.build.json").read_text())["target"] == "mix"
    r = dynq("build", tiny, "--target", "mix", "--out", tiny.parent / "cli")
    assert r.code == 2 and "already exists" in r.err and r.err.count("\n") == 1


def test_cpu_build_does_not_import_torch(tiny: Path):
    """A CPU build of legacy and k-quant types runs the compiled loops only: torch, which takes
    a second to import, stays out of the process."""
    code = (
        "import sys; from dynq.cli import main; rc = main(sys.argv[1:]); "
        "print('torch' in sys.modules); sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code, "build", str(tiny), "--out", str(tiny.parent / "nt")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "False"
    assert {p.name for p in (tiny.parent / "nt").glob("*.gguf")} == {
        "tiny-Q4_0.gguf",
        "tiny-mix.gguf",
    }


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return p.returncode == 0


def _build_on_tmpfs(tiny: Path, out: Path, size: str) -> subprocess.CompletedProcess[str]:
    """``dynq build`` of target ``mix`` into ``out``, a tmpfs of ``size`` mounted in a private
    user+mount namespace; stdout ends with ``files:`` and what the tmpfs holds afterwards."""
    out.mkdir()
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && "$@"; rc=$?; '
        'echo "files:$(ls -A "$OUT")"; exit $rc'
    )
    build = [*dynq_command(), "build", str(tiny), "--target", "mix", "--out", str(out)]
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(out), *build],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(out)},
    )


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_cli_full_disk_fails_before_writing(tiny: Path):
    """A real full disk: a 64 KiB tmpfs cannot hold the outputs; the build says so in one line
    before writing, and leaves nothing there."""
    out = tiny.parent / "small"
    p = _build_on_tmpfs(tiny, out, "64k")
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and "not enough free space" in err and str(out) in err, err
    assert p.stdout.strip().endswith("files:"), p.stdout  # nothing left on the full disk


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_cli_full_disk_at_the_report(tiny: Path):
    """A tmpfs that holds the GGUF file to the page and nothing more: the file is complete and
    stays; the build report cannot be written, which the build says in one line."""
    size = _build(tiny, targets=["mix"])[0].file_size
    p = _build_on_tmpfs(tiny, tiny.parent / "exact", str(-(-size // 4096) * 4096))
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and "cannot write the build report" in err, err
    assert "tiny-mix.build.json" in err and "tiny-mix.gguf complete" in err, err
    assert p.stdout.strip().endswith("files:tiny-mix.gguf"), p.stdout


def test_cli_write_refused_midway_leaves_nothing(tiny: Path):
    """The kernel refuses a write partway (a file size limit, as `ulimit -f` sets; numpy sees a
    short write, as when the disk fills during a build): one-line error, no file kept."""
    out = tiny.parent / "limited"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    p = subprocess.run(
        [*dynq_command(), "build", str(tiny), "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and "cannot write" in err and "nothing was kept" in err, err
    assert list(out.iterdir()) == []
    assert len(_build(tiny)) == 2  # without the limit the same build succeeds
