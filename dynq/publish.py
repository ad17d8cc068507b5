"""``dynq publish``: assemble a recipe's built targets into a Hub repository and upload it.

The repository is assembled in a local folder exactly as it will be uploaded (nothing else is
sent): each target's GGUF (hard-linked from the build, or split into llama.cpp ``gguf-split``
shards ``<name>-<target>-00001-of-0000N.gguf`` when it is larger than the shard size), its build
and evaluation reports, the canonical recipe, and a model card. The folder is written beside its
final place and renamed into it, so it is never seen half-written.

Before anything is written, every target is checked: the build report must describe the file
(sha256), the file and the report must come from the current recipe (its canonical sha256 and
version), and an evaluation report of that same file must exist (only a warning in a dry run).

The upload is one ``create_commit``: every file and the removal of this recipe's files that the
folder no longer has (e.g. old shards), in a single commit whose message names the recipe and
its version. ``upload_folder`` is not used because with ``hf_xet`` installed it may split a
large folder into several commits with its own messages, and ``upload_large_folder`` takes no
commit message at all; a repository should never be seen with half a release in it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGUFValueType

from dynq import __version__
from dynq.errors import DynqError
from dynq.gguf_io import GGUFFile, TensorEntry, read_gguf
from dynq.outputs import baseline_path, eval_report_path, output_path, report_path
from dynq.provenance import KEY_RECIPE_SHA256
from dynq.recipe import LoadedRecipe, canonical_body
from dynq.sources import sha256_file

DEFAULT_SHARD_SIZE = 50 * 1000**3  # 50 GB, as gguf-split's --split-max-size 50G
DEFAULT_DIST = Path("dist")
MANIFEST = ".dynq-publish.json"  # in the folder, never uploaded

KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
KEY_SPLIT_TENSORS = "split.tensors.count"
SPLIT_KEYS = (KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS)
GGUF_DEFAULT_ALIGNMENT = 32
_HEADER = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv (GGUF v2/v3)

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)\s*$", re.IGNORECASE)


class PublishError(DynqError):
    """A target cannot be published (missing, stale or unevaluated build), or the upload failed."""


# -- sizes ------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``50G``, ``50GB``, ``500M``, ``1.5G``, ``64MiB``, ``123456`` -> bytes (K/M/G/T are powers
    of 1000, as in gguf-split and on the Hub; KiB/MiB/GiB/TiB powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise PublishError(f"--shard-size: bad size '{text}' (e.g. 50G, 500M, 64MiB, 123456)")
    n, unit, suffix = float(m.group(1)), m.group(2).upper(), m.group(3).upper()
    if suffix == "I":  # "Gi" without B
        suffix = "IB"
    base = 1024 if suffix == "IB" else 1000
    if suffix == "IB" and not unit:
        raise PublishError(f"--shard-size: bad size '{text}'")
    size = int(n * base ** " KMGT".index(unit or " "))
    if size <= 0:
        raise PublishError(f"--shard-size: size must be positive, not '{text}'")
    return size


def human(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


# -- gguf-split shards ------------------------------------------------------------------------


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def shard_name(stem: str, i: int, n: int) -> str:
    """llama.cpp's split file name (``llama_split_path``): ``<stem>-00001-of-00003.gguf``."""
    return f"{stem}-{i + 1:05d}-of-{n:05d}.gguf"


def plan_shards(src: GGUFFile, max_tensor_bytes: int) -> list[list[TensorEntry]]:
    """Distribute tensors over shards as ``llama-gguf-split --split-max-size`` does: in file
    order, a new shard when the padded tensor data of the current one would exceed the limit
    (metadata not counted). Unlike gguf-split, a first tensor larger than the limit gets a shard
    of its own instead of an error."""
    shards: list[list[TensorEntry]] = [[]]
    cur = 0
    for t in src.tensors:
        n = _pad(t.nbytes, GGUF_DEFAULT_ALIGNMENT)
        if shards[-1] and cur + n > max_tensor_bytes:
            shards.append([])
            cur = n
        else:
            cur += n
        shards[-1].append(t)
    return shards


def tensor_budget(src: GGUFFile, max_file_size: int) -> int:
    """The tensor-data limit that keeps every shard file within ``max_file_size``: a shard's
    metadata is at most the source's header plus the split keys and alignment padding."""
    budget = max_file_size - src.data_offset - 128 - src.alignment
    if budget <= 0:
        raise PublishError(
            f"{src.path}: --shard-size {max_file_size} is smaller than the GGUF's metadata "
            f"({src.data_offset} bytes)"
        )
    return budget


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, vtype: GGUFValueType, fmt: str, value: int) -> bytes:
    return _gguf_str(key) + struct.pack("<I", int(vtype)) + struct.pack(fmt, value)


def _kv_blobs(src: GGUFFile) -> list[tuple[str, bytes]]:
    """Each key/value of the source exactly as encoded in its header."""
    total = sum(kv.nbytes for kv in src.fields.values())
    with src.path.open("rb") as f:
        f.seek(_HEADER.size)
        blob = f.read(total)
    out, off = [], 0
    for key, kv in src.fields.items():
        out.append((key, blob[off : off + kv.nbytes]))
        off += kv.nbytes
    return out


def _copy_range(fin, fout, offset: int, n: int, h: Any) -> None:
    fin.seek(offset)
    while n > 0:
        block = fin.read(min(n, 1 << 24))
        if not block:
            raise PublishError(f"{fin.name}: truncated while copying tensor data")
        fout.write(block)
        h.update(block)
        n -= len(block)


def split_gguf(
    path: Path, dest: Path, stem: str, max_tensor_bytes: int
) -> list[tuple[Path, int, str]]:
    """Split a GGUF into llama.cpp shards in ``dest``; returns (path, size, sha256) per shard.

    The layout is llama-gguf-split's, byte for byte: the first shard carries every key/value of
    the source followed by ``split.no`` (u16), ``split.tensors.count`` (i32, all tensors) and
    ``split.count`` (u16); the other shards carry only the three split keys; each shard's tensor
    offsets start at 0 and every tensor is padded to the alignment.
    """
    src = read_gguf(path)
    shards = plan_shards(src, max_tensor_bytes)
    n = len(shards)
    kvs = [(k, b) for k, b in _kv_blobs(src) if k not in SPLIT_KEYS]
    align = src.alignment
    align_kv = [(k, b) for k, b in kvs if k == "general.alignment"]
    out: list[tuple[Path, int, str]] = []
    with path.open("rb") as fin:
        for i, tensors in enumerate(shards):
            own = kvs if i == 0 else align_kv  # non-default alignment: every shard says so
            split = [
                _kv(KEY_SPLIT_NO, GGUFValueType.UINT16, "<H", i),
                _kv(KEY_SPLIT_TENSORS, GGUFValueType.INT32, "<i", len(src.tensors)),
                _kv(KEY_SPLIT_COUNT, GGUFValueType.UINT16, "<H", n),
            ]  # gguf-split's order: it sets split.count last (gguf_set_val re-appends the key)
            meta = bytearray(_HEADER.pack(b"GGUF", 3, len(tensors), len(own) + len(split)))
            for _, b in own:
                meta += b
            for b in split:
                meta += b
            offset = 0
            for t in tensors:
                meta += _gguf_str(t.name)
                meta += struct.pack(f"<I{len(t.shape)}Q", len(t.shape), *t.shape)
                meta += struct.pack("<IQ", int(t.type), offset)
                offset += _pad(t.nbytes, align)
            meta += bytes(_pad(len(meta), align) - len(meta))
            target = dest / shard_name(stem, i, n)
            h = hashlib.sha256()
            with target.open("wb") as fout:
                fout.write(meta)
                h.update(meta)
                for t in tensors:
                    _copy_range(fin, fout, t.offset, t.nbytes, h)
                    pad = bytes(_pad(t.nbytes, align) - t.nbytes)
                    fout.write(pad)
                    h.update(pad)
            out.append((target, target.stat().st_size, h.hexdigest()))
    return out


# -- checking what is published ---------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PublishError(f"{path}: cannot read report: {e}") from None
    if not isinstance(data, dict):
        raise PublishError(f"{path}: not a report (expected a JSON object)")
    return data


@dataclass
class TargetBuild:
    """A target ready to publish: its GGUF, build report and (maybe) evaluation report."""

    target: str
    gguf: Path
    build_report: Path
    build: dict[str, Any]
    eval_report: Path | None
    eval: dict[str, Any] | None
    files: list[str] = field(default_factory=list)  # names in the folder

    @property
    def size(self) -> int:
        return int(self.build["file_size"])

    @property
    def bpw(self) -> float:
        return float(self.build["bpw"])


def check_target(
    loaded: LoadedRecipe,
    target: str,
    build_dir: Path | None,
    require_eval: bool,
    warn: Callable[[str], None],
) -> TargetBuild:
    """The target's build, checked against the current recipe; PublishError says why not."""
    recipe = loaded.recipe
    gguf_path = output_path(loaded, target, build_dir)
    rebuild = f"dynq build {loaded.path} --target {target} --force"
    if not gguf_path.exists():
        raise PublishError(f"{gguf_path}: target {target} is not built; run: {rebuild}")
    rp = report_path(gguf_path)
    if not rp.exists():
        raise PublishError(f"{rp}: no build report for {gguf_path.name}; run: {rebuild}")
    rep = _read_json(rp)
    for key in ("recipe_sha256", "recipe_version", "sha256", "file_size", "bpw"):
        if key not in rep:
            raise PublishError(f"{rp}: build report has no '{key}'")
    if rep["recipe_sha256"] != loaded.sha256 or rep["recipe_version"] != recipe.version:
        raise PublishError(
            f"{rp}: changed recipe: {gguf_path.name} was built from {recipe.name} "
            f"{rep['recipe_version']} (sha256 {str(rep['recipe_sha256'])[:12]}), the recipe is now "
            f"{recipe.version} (sha256 {loaded.sha256[:12]}); run: {rebuild}"
        )
    if rep.get("target") not in (None, target):
        raise PublishError(f"{rp}: report is for target {rep['target']}, not {target}")
    built_by = read_gguf(gguf_path).get(KEY_RECIPE_SHA256)
    if built_by != loaded.sha256:
        raise PublishError(
            f"{gguf_path}: changed recipe: {KEY_RECIPE_SHA256} is {str(built_by)[:12]}, the "
            f"recipe's sha256 is {loaded.sha256[:12]}; run: {rebuild}"
        )
    sha = sha256_file(gguf_path)
    if sha != rep["sha256"]:
        raise PublishError(
            f"{gguf_path}: stale build: sha256 {sha[:12]} is not the build report's "
            f"{str(rep['sha256'])[:12]} ({rp.name}); run: {rebuild}"
        )
    ep = eval_report_path(gguf_path)
    ev = None
    if ep.exists():
        ev = _read_json(ep)
        ev_sha = ev.get("sha256", ev.get("file_sha256"))
        if ev_sha != sha:
            raise PublishError(
                f"{ep}: stale evaluation: it scored sha256 {str(ev_sha)[:12]}, the file is "
                f"{sha[:12]}; run dynq eval on {gguf_path.name} again"
            )
        if ev.get("recipe_version", recipe.version) != recipe.version:
            raise PublishError(
                f"{ep}: stale evaluation: recipe version {ev['recipe_version']}, the recipe is "
                f"{recipe.version}; run dynq eval on {gguf_path.name} again"
            )
    elif require_eval:
        raise PublishError(
            f"{ep}: target {target} has no evaluation report; run dynq eval on {gguf_path.name}"
        )
    else:
        warn(f"{ep.name}: no evaluation report: the card shows no KLD for {target}")
    return TargetBuild(target, gguf_path, rp, rep, ep if ev is not None else None, ev)


def baseline_evals(
    loaded: LoadedRecipe, build_dir: Path | None, skip: set[str]
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Evaluation reports of the recipe's baselines (``baselines/<name>-<MIX>.eval.json``)."""
    ev = loaded.recipe.evaluation
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for mix in ev.baselines if ev is not None else []:
        if mix in skip:
            continue
        p = eval_report_path(baseline_path(loaded, mix, build_dir))
        if p.exists():
            out[mix] = (p, _read_json(p))
    return out


# -- the model card ---------------------------------------------------------------------------


def type_summary(build: dict[str, Any]) -> str:
    """Share of the tensor bytes per GGML type, largest first: ``Q4_K 71% · Q6_K 20% · …``."""
    size: dict[str, int] = {}
    for t in build.get("tensors") or []:
        size[t["type"]] = size.get(t["type"], 0) + int(t["bytes"])
    total = sum(size.values())
    if not total:
        return "—"
    parts = []
    for k, v in sorted(size.items(), key=lambda kv: -kv[1]):
        pct = 100 * v / total
        parts.append(f"{k} {pct:.0f}%" if pct >= 1 else f"{k} <1%")
    return " · ".join(parts)


def _num(ev: dict[str, Any] | None, key: str, fmt: str) -> str:
    if ev is None or not isinstance(ev.get(key), int | float):
        return "—"
    return format(ev[key], fmt)


def _top1(ev: dict[str, Any] | None) -> str:
    if ev is None or not isinstance(ev.get("top1_agreement"), int | float):
        return "—"
    return f"{100 * ev['top1_agreement']:.2f}%"


def _license(value: object) -> dict[str, str]:
    if not isinstance(value, str) or not value.strip():
        return {}
    v = value.strip().lower()
    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", v):
        return {"license": v}
    return {"license": "other", "license_name": re.sub(r"[^a-z0-9.]+", "-", v).strip("-")}


def render_card(
    loaded: LoadedRecipe,
    repo: str,
    builds: list[TargetBuild],
    baselines: dict[str, tuple[Path, dict[str, Any]]],
    license_value: object,
) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    recipe = loaded.recipe
    model = recipe.model
    tags = ["gguf", "quantized", "dynq", "llama.cpp", model.arch]
    if any(b.build.get("imatrix") for b in builds):
        tags.append("imatrix")
    data = ModelCardData(
        base_model=model.hf_repo,
        base_model_relation="quantized" if model.hf_repo else None,
        library_name="gguf",
        tags=tags,
        **_license(license_value),
    )
    base = f"[{model.hf_repo}](https://huggingface.co/{model.hf_repo})" if model.hf_repo else "the"
    lines = [
        f"# {repo}",
        "",
        f"GGUF quantizations of {base} model ({recipe.description}), built by "
        f"dynq from the recipe `{recipe.name}` version {recipe.version}: "
        "every tensor gets its own GGML type.",
        "",
        "| target | file | size | bpw | PPL | mean KLD | p99 KLD | top-1 | types (by bytes) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in builds:
        file = f"`{b.files[0]}`" + (f" (+{len(b.files) - 1} shards)" if len(b.files) > 1 else "")
        lines.append(
            f"| **{b.target}** | {file} | {human(b.size)} | {b.bpw:.3f} | "
            f"{_num(b.eval, 'ppl', '.4f')} | {_num(b.eval, 'mean_kld', '.5f')} | "
            f"{_num(b.eval, 'p99_kld', '.4f')} | {_top1(b.eval)} | {type_summary(b.build)} |"
        )
    for mix, (_, ev) in baselines.items():
        size = ev.get("file_size", ev.get("size"))
        lines.append(
            f"| {mix} (llama.cpp baseline) | — | "
            f"{human(int(size)) if isinstance(size, int) else '—'} | {_num(ev, 'bpw', '.3f')} | "
            f"{_num(ev, 'ppl', '.4f')} | {_num(ev, 'mean_kld', '.5f')} | "
            f"{_num(ev, 'p99_kld', '.4f')} | {_top1(ev)} | llama-quantize's stock mix |"
        )
    ev = recipe.evaluation
    lines += [
        "",
        "KLD and top-1 agreement compare each file's next-token distribution with the "
        "full-precision model's"
        + (
            f" on held-out text ({', '.join(Path(t.path).name for t in ev.text)}; "
            f"{ev.chunks} chunks of {ev.ctx} tokens)"
            if ev is not None and ev.text
            else ""
        )
        + "; lower KLD and higher top-1 are closer to the original. "
        "A dash means no evaluation report was published for that row.",
    ]
    if any(len(b.files) > 1 for b in builds):
        lines += [
            "",
            "Files over the Hub's size limit are split with llama.cpp's gguf-split layout: "
            "point llama.cpp at the `-00001-of-…` file and it loads the rest.",
        ]
    lines += [
        "",
        "## Recipe",
        "",
        f"`{recipe.name}.toml` is the recipe in canonical form (sha256 `{loaded.sha256}`, also "
        "stored in each GGUF as `dynq.recipe.sha256`). Each target's `.build.json` lists every "
        "tensor's type and the build's sha256 (of the unsplit file); `.eval.json` holds its "
        "scores. `dynq build " + f"{recipe.name}.toml` rebuilds the files from the source and "
        "inventory the recipe names.",
        "",
    ]
    return str(ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines)))


# -- assembling the folder --------------------------------------------------------------------


@dataclass
class FileEntry:
    path: str  # in the repository
    size: int
    sha256: str | None = None


@dataclass
class Assembly:
    """The assembled repository folder and what its commit will say."""

    folder: Path
    repo: str
    revision: str | None
    recipe: str
    version: str
    recipe_sha256: str
    targets: list[str]
    files: list[FileEntry]
    commit_message: str
    commit_description: str
    owned_patterns: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "revision": self.revision,
            "recipe": self.recipe,
            "version": self.version,
            "recipe_sha256": self.recipe_sha256,
            "targets": self.targets,
            "files": [f.__dict__ for f in self.files],
            "commit_message": self.commit_message,
            "commit_description": self.commit_description,
            "owned_patterns": self.owned_patterns,
            "dynq_version": __version__,
        }

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def default_out(repo: str) -> Path:
    owner, name = repo.split("/")
    return DEFAULT_DIST / f"{owner}--{name}"


def check_repo(repo: str) -> str:
    if not _REPO.match(repo) or ".." in repo or len(repo) > 96:
        raise PublishError(f"--repo: '{repo}' is not a Hub repository id (OWNER/NAME)")
    return repo


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``; an old ``out`` is moved aside first, then
    removed, so ``out`` is always either the old complete folder or the new one."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PublishError(f"{out}: exists and is not a folder")
    if out.exists():
        if any(out.iterdir()) and not (out / MANIFEST).exists():
            raise PublishError(
                f"{out}: exists and was not written by dynq publish (no {MANIFEST}); "
                "choose another --out or remove it"
            )
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / out.name)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old / out.name, out)  # put the previous folder back
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def assemble(
    loaded: LoadedRecipe,
    repo: str,
    *,
    targets: list[str] | None = None,
    build_dir: Path | None = None,
    out: Path | None = None,
    revision: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    require_eval: bool = True,
    warn: Callable[[str], None] = lambda m: None,
) -> Assembly:
    """Check every target, then write the repository folder atomically."""
    recipe = loaded.recipe
    check_repo(repo)
    names = targets or list(recipe.targets)
    for t in names:
        if t not in recipe.targets:
            raise PublishError(
                f"{loaded.path}: --target {t}: no such target (the recipe has "
                f"{', '.join(recipe.targets)})"
            )
    names = list(dict.fromkeys(names))
    builds = [check_target(loaded, t, build_dir, require_eval, warn) for t in names]
    baselines = baseline_evals(loaded, build_dir, set(names))
    license_value = read_gguf(builds[0].gguf).get("general.license")
    out = out if out is not None else default_out(repo)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a plain mkdir would not
        files: list[FileEntry] = []
        for b in builds:
            stem = b.gguf.stem
            if b.size > shard_size:
                budget = tensor_budget(read_gguf(b.gguf), shard_size)
                for path, size, sha in split_gguf(b.gguf, tmp, stem, budget):
                    files.append(FileEntry(path.name, size, sha))
                    b.files.append(path.name)
            else:
                _link_or_copy(b.gguf, tmp / b.gguf.name)
                files.append(FileEntry(b.gguf.name, b.size, b.build["sha256"]))
                b.files.append(b.gguf.name)
            for rp in (b.build_report, b.eval_report):
                if rp is not None:
                    shutil.copyfile(rp, tmp / rp.name)
                    files.append(FileEntry(rp.name, rp.stat().st_size, sha256_file(rp)))
        if baselines:
            (tmp / "baselines").mkdir()
            for path, _ in baselines.values():
                shutil.copyfile(path, tmp / "baselines" / path.name)
                files.append(
                    FileEntry(f"baselines/{path.name}", path.stat().st_size, sha256_file(path))
                )
        texts = {
            # the body without the #:schema line (no schemas/ beside it on the Hub): its sha256
            # is the recipe's identity, as stored in every GGUF
            f"{recipe.name}.toml": canonical_body(recipe),
            "README.md": render_card(loaded, repo, builds, baselines, license_value),
        }
        for name, text in texts.items():
            data = text.encode()
            (tmp / name).write_bytes(data)
            files.append(FileEntry(name, len(data), hashlib.sha256(data).hexdigest()))
        assert files[-2].sha256 == loaded.sha256  # the recipe file is the recipe's identity
        files.sort(key=lambda f: f.path)
        message = f"{recipe.name} {recipe.version}: {', '.join(names)} (dynq publish)"
        description = "\n".join(
            [
                f"Recipe {recipe.name} {recipe.version}, sha256 {loaded.sha256}.",
                "",
                *(
                    f"- {b.target}: {', '.join(b.files)} ({b.size:,} bytes, {b.bpw:.3f} bpw, "
                    f"sha256 {b.build['sha256']})"
                    for b in builds
                ),
                "",
                f"dynq {__version__}",
            ]
        )
        owned = [
            f"{recipe.name}-*.gguf",
            f"{recipe.name}-*.build.json",
            f"{recipe.name}-*.eval.json",
            "baselines/*.eval.json",
        ]
        asm = Assembly(
            out, repo, revision, recipe.name, recipe.version, loaded.sha256, names, files,
            message, description, owned,
        )  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(asm.to_json(), indent=1) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return asm


# -- uploading --------------------------------------------------------------------------------


def _owned(path: str, patterns: list[str]) -> bool:
    """Whether a file in the repository is one dynq publishes for this recipe (patterns match
    within one folder level: ``*`` does not cross ``/``)."""
    return any(path.count("/") == p.count("/") and fnmatch.fnmatchcase(path, p) for p in patterns)


def _scrub(msg: str, token: str) -> str:
    return msg.replace(token, "***") if token else msg


def upload(
    asm: Assembly, token: str, info: Callable[[str], None] = lambda m: None
) -> tuple[str, list[str]]:
    """Upload the folder in one commit; returns (commit URL, deleted paths)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(token=token)
    try:
        api.create_repo(asm.repo, exist_ok=True, repo_type="model")
        if asm.revision and asm.revision != "main":
            api.create_branch(asm.repo, branch=asm.revision, exist_ok=True)
        try:
            remote = api.list_repo_files(asm.repo, revision=asm.revision)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            remote = []  # nothing there yet
        ours = {f.path for f in asm.files}
        stale = sorted(p for p in remote if p not in ours and _owned(p, asm.owned_patterns))
        ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in stale]
        ops += [
            CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(asm.folder / f.path))
            for f in asm.files
        ]
        for p in stale:
            info(f"deleting {p} (not in this release)")
        commit = api.create_commit(
            asm.repo,
            ops,
            commit_message=asm.commit_message,
            commit_description=asm.commit_description,
            revision=asm.revision,
        )
    except (HfHubHTTPError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PublishError(f"{asm.repo}: upload failed: {_scrub(first, token)}") from None
    return str(commit.commit_url), stale


def describe(asm: Assembly) -> list[str]:
    """What will be (or was) uploaded: repository, files and sizes, commit message."""
    where = asm.repo + (f"@{asm.revision}" if asm.revision else "")
    lines = [f"repository {where} from {asm.folder}:"]
    width = len(f"{asm.total_size:,}")
    for f in asm.files:
        lines.append(f"  {f.size:>{width},}  {f.path}")
    lines.append(f"  {asm.total_size:>{width},}  total ({len(asm.files)} files, "
                 f"{human(asm.total_size)})")  # fmt: skip
    lines.append(f"commit message: {asm.commit_message}")
    return lines
