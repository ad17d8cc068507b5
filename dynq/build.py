"""``dynq build``: stream a source GGUF through a recipe's Plans into finished GGUF files.

One pass over the source's tensors (memory-mapped) serves every target being built: each tensor
is read once, each distinct output type is quantized once, and the bytes go to every target that
needs them. Peak memory is a few copies of the largest tensor. Each output is written to a
temporary file beside its final name and renamed when complete, after its size has been checked
against the Plan's prediction to the byte.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf.constants import GGUFValueType, LlamaFileType

from dynq import __version__, kernels, qtypes, stock
from dynq.calibration import recipe_imatrix
from dynq.errors import DynqError, SourceError
from dynq.fsutil import atomic_path, atomic_write_text
from dynq.gguf_io import GGUFFile, GGUFWriter, TensorEntry, inventory_of, read_gguf
from dynq.imatrix_file import Imatrix, load_imatrix
from dynq.outputs import output_path, report_path
from dynq.plan import Plan, PlannedTensor, Resolver
from dynq.provenance import (
    IMATRIX_KEYS,
    KEY_FILE_TYPE,
    KEY_IMATRIX_CHUNKS,
    KEY_IMATRIX_ENTRIES,
    KEY_RECIPE_SHA256,
    KEY_TEMPLATE_SOURCE_SHA256,
    ImatrixRef,
    output_metadata,
)
from dynq.recipe import LoadedRecipe
from dynq.sources import resolve_source
from dynq.templates import check_for_build
from dynq.templates.check import local_source

_PREAMBLE = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture")
_INT_KEYS = {
    KEY_FILE_TYPE: GGUFValueType.UINT32,
    "general.quantization_version": GGUFValueType.UINT32,
    KEY_IMATRIX_ENTRIES: GGUFValueType.INT32,
    KEY_IMATRIX_CHUNKS: GGUFValueType.INT32,
}


# write errors that mean "no room": disk full, quota exceeded, file size limit (ulimit -f)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _mib(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:,.1f} MiB)"


class BuildError(DynqError):
    """A build cannot start or could not finish (nothing is left under the final name)."""


def nearest_ftype(loaded: LoadedRecipe, plan: Plan) -> LlamaFileType:
    """The llama.cpp ftype closest to a target: its stock mix, else its dominant quant type."""
    target = loaded.recipe.targets[plan.target]
    names = {f.name: f for f in LlamaFileType}
    if target.mix is not None and f"MOSTLY_{target.mix}" in names:
        return names[f"MOSTLY_{target.mix}"]
    sizes: dict[str, int] = {}
    for t in plan.tensors:
        if t.layer is not None and t.type.is_quantized:
            sizes[t.type.name] = sizes.get(t.type.name, 0) + t.bytes
    if not sizes:
        return LlamaFileType.ALL_F32
    dominant = max(sizes, key=lambda k: sizes[k])
    for cand in (f"MOSTLY_{dominant}", f"MOSTLY_{dominant}_M", f"MOSTLY_{dominant}_S"):
        if cand in names:
            return names[cand]
    return LlamaFileType.GUESSED


@dataclass
class TensorReport:
    name: str
    type: str
    bytes: int
    rel_error: float | None  # imatrix-weighted RMS error / weighted RMS of the source


@dataclass
class BuildReport:
    recipe: str
    recipe_version: str
    recipe_sha256: str
    target: str
    file: str
    sha256: str
    file_size: int
    predicted_size: int
    bpw: float
    imatrix: str | None
    source: str
    dynq_version: str
    seconds: float
    tensors: list[TensorReport] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["tensors"] = [t.__dict__ for t in self.tensors]
        return d


@dataclass
class BuildOptions:
    targets: list[str] | None = None
    out: Path | None = None
    device: str | None = None
    imatrix: Path | None = None
    force: bool = False
    errors: bool = True  # measure each tensor's weighted error for the report


ProgressFn = Callable[[str, int, int, int], None]  # (target, tensors done, bytes done, total)


def _write_metadata(w: gguf.GGUFWriter, src: GGUFFile, new: dict[str, object]) -> None:
    for name, kv in src.fields.items():
        if name in _PREAMBLE or name in new or name in IMATRIX_KEYS:
            continue
        w.add_key_value(name, kv.value, kv.type, sub_type=kv.sub_type)
    for key, value in new.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        else:
            w.add_key_value(key, value, _INT_KEYS[key])


def source_floats(src: GGUFFile, t: TensorEntry, mapped: bool = False) -> np.ndarray:
    """A source tensor as float32 (F16 stays float16: the kernels widen it chunk by chunk, on the
    GPU too), shaped (..., rows, ne0) like gguf's own arrays. F32 and F16 are read into fresh
    memory, or with ``mapped`` viewed in the memory map (release them with
    :meth:`GGUFFile.release` after use); either way a build's resident memory stays a few
    tensors."""
    qt = qtypes.get(t.type)
    if qt.gguf in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return src.array(t, copy=not mapped)
    raw = src.read(t)
    if qt.name in kernels.supported_types():
        return kernels.dequantize(raw, qt, t.shape)
    return gguf.quants.dequantize(raw, qt.gguf).reshape(tuple(reversed(t.shape)))


def quantize_tensor(
    x: np.ndarray,
    t: qtypes.GGMLType,
    imp: np.ndarray | None,
    device: str | None,
    measure: bool = False,
) -> tuple[np.ndarray, float, float]:
    """Quantize an (..., rows, ne0) array; 3-D expert tensors use each expert's importance.

    Returns ``(bytes, sum w·(x−q)², sum w·x²)``: with ``measure``, the error sums of
    :func:`dynq.kernels.quantize_measured`, each expert weighted by its own importance (w = 1
    without an imatrix); without, zeros.
    """
    ne0 = x.shape[-1]

    def one(rows: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, float, float]:
        if measure:
            return kernels.quantize_measured(rows, t, imatrix=w, device=device)
        return kernels.quantize(rows, t, imatrix=w, device=device), 0.0, 0.0

    if x.ndim <= 2 or imp is None or imp.shape[0] == 1:
        return one(x.reshape(-1, ne0), None if imp is None else imp[0])
    experts = x.reshape(x.shape[0], -1, ne0)
    if imp.shape[0] != experts.shape[0]:
        raise BuildError(f"imatrix has {imp.shape[0]} experts, tensor has {experts.shape[0]}")
    parts = [one(experts[e], imp[e]) for e in range(experts.shape[0])]
    data = np.concatenate([p[0] for p in parts])
    return data, sum(p[1] for p in parts), sum(p[2] for p in parts)


#: how far ahead of the tensor being read the OS is asked to read the source (bytes; asking
#: for 1 GiB at each tensor made a Gemma 3 build slower, 64 MiB took 4.4 s down to 3.1)
_READ_AHEAD = 1 << 26


class _TailHasher:
    """The sha256 of a file being appended to, computed in a background thread as it grows
    (hashlib and ``os.pread`` release the GIL): a build does not read its outputs again at the
    end. :meth:`catch_up` after each flushed write; :meth:`hexdigest` once the file is closed."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._h = hashlib.sha256()
        self._done = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dynq-hash")
        self._pending: list[Future[None]] = []

    def catch_up(self) -> None:
        still = []
        for f in self._pending:
            if f.done():
                f.result()  # a failed read raises here
            else:
                still.append(f)
        self._pending = still
        self._pending.append(self._pool.submit(self._read_to, os.fstat(self._fd).st_size))

    def _read_to(self, end: int) -> None:
        while self._done < end:
            block = os.pread(self._fd, min(1 << 24, end - self._done), self._done)
            if not block:
                raise OSError(f"file shrank while hashing it (at {self._done} of {end} bytes)")
            self._h.update(block)
            self._done += len(block)

    def hexdigest(self) -> str:
        self.catch_up()
        try:
            for f in self._pending:
                f.result()
        finally:
            self.close()
        return self._h.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_local_source(loaded: LoadedRecipe) -> GGUFFile | None:
    """The recipe's source GGUF header if the source is on this machine and readable."""
    path = local_source(loaded)
    if path is None:
        return None
    try:
        return read_gguf(path.resolve())
    except DynqError:
        return None


class Builder:
    """Builds some or all targets of one recipe in one pass over the source."""

    def __init__(
        self,
        loaded: LoadedRecipe,
        opts: BuildOptions,
        warn: Callable[[str], None] = lambda m: None,
        say: Callable[[str], None] = lambda m: None,
    ) -> None:
        self.loaded = loaded
        self.opts = opts
        self.warn = warn
        self.say = say
        self.resolver = Resolver(loaded)
        recipe = loaded.recipe
        self.targets = opts.targets or list(recipe.targets)
        for t in self.targets:
            self.resolver.target(t)  # unknown target names fail before any work
        self.imatrix, self.imatrix_name = self._load_imatrix()
        self.imatrix_ref = (
            ImatrixRef(
                self.imatrix_name or "", self.imatrix.datasets[0] if self.imatrix.datasets else None
            )
            if self.imatrix is not None
            else None
        )
        self.plans = {t: self.resolver.plan(t, imatrix=self.imatrix_ref) for t in self.targets}
        self._check_imatrix_needs()
        self._check_kernels()
        # the source's header, read once here when the source is local (the template check
        # wants it now, the build later)
        self._header = _read_local_source(loaded)
        # False: the source is not on this machine yet
        self.template_checked = check_for_build(loaded, warn, source=self._header)

    # -- inputs ----------------------------------------------------------------------------
    def _load_imatrix(self) -> tuple[Imatrix | None, str | None]:
        if self.opts.imatrix is not None:
            return load_imatrix(self.opts.imatrix), self.opts.imatrix.name
        im, path = recipe_imatrix(self.loaded, self.opts.out, self.opts.device or "cpu", self.say)
        return im, path.name if path is not None else None

    def _check_kernels(self) -> None:
        supported = kernels.supported_types()
        for plan in self.plans.values():
            for t in plan.tensors:
                if t.rule != "not quantized" and t.type.name not in supported:
                    raise BuildError(
                        f"{self.loaded.path}: target {plan.target}: tensor '{t.name}' gets "
                        f"{t.type.name}, which dynq's kernels do not support yet (they do: "
                        f"{', '.join(sorted(supported))})"
                    )

    def _check_imatrix_needs(self) -> None:
        for plan in self.plans.values():
            for t in plan.tensors:
                if self.imatrix is None and stock.requires_imatrix(t.name, t.type.gguf):
                    raise BuildError(
                        f"{self.loaded.path}: target {plan.target}: tensor '{t.name}' gets "
                        f"{t.type.name}, which needs an importance matrix (as in llama-quantize); "
                        "give the recipe a [calibration] section or pass --imatrix"
                    )
        if self.imatrix is not None:
            names = {
                t.name
                for p in self.plans.values()
                for t in p.tensors
                if t.type.is_quantized and len(t.shape) >= 2
            }
            missing = sorted(n for n in names if n not in self.imatrix.sums)
            if missing:
                self.warn(
                    f"imatrix {self.imatrix_name} has no entry for {len(missing)} tensor(s), "
                    f"e.g. {missing[0]}: quantized without importance weights"
                )

    def _open_source(self) -> GGUFFile:
        model = self.loaded.recipe.model
        if model.source is None:
            raise BuildError(f"{self.loaded.path}: model.source: the recipe names no source GGUF")
        path = resolve_source(model.source, self.loaded.dir, model.source_sha256)
        header = self._header
        src = header if header is not None and header.path == path.resolve() else read_gguf(path)
        inv = inventory_of(src, origin=model.source)
        want = {t.name: t for t in self.resolver.inventory.tensors}
        have = {t.name: t for t in inv.tensors}
        diffs = sorted(want.keys() ^ have.keys()) + sorted(
            n for n in want.keys() & have.keys() if want[n] != have[n]
        )
        if diffs:
            more = f" and {len(diffs) - 5} more" if len(diffs) > 5 else ""
            raise SourceError(
                f"{path}: source does not match the recipe's inventory "
                f"({model.inventory}): {', '.join(diffs[:5])}{more}"
            )
        quantized = [t for t in inv.tensors if qtypes.parse_type(t.type).is_quantized]
        if quantized and not model.source_quantized:
            raise SourceError(
                f"{path}: source is quantized ({quantized[0].type} on {quantized[0].name}); set "
                "model.source_quantized = true to build from its F32 dequantization"
            )
        if quantized:
            self.warn(f"source {model.source} is quantized: dequantized to F32 before quantizing")
        return src

    # -- the pass --------------------------------------------------------------------------
    def _check_free_space(self, outs: dict[str, Path]) -> None:
        """Fail before the first tensor, not hours in, when the outputs cannot fit (each file
        is written beside its final name, so an output being replaced needs its full size too)."""
        need: dict[Path, int] = {}
        for target, path in outs.items():
            need[path.parent] = need.get(path.parent, 0) + self.plans[target].file_size
        for folder, n in need.items():
            probe = folder
            while not probe.exists():  # the folder is created later: ask its nearest ancestor
                probe = probe.parent
            free = shutil.disk_usage(probe).free
            if free < n:
                raise BuildError(
                    f"{folder}: not enough free space: the outputs need {_mib(n)}, "
                    f"{_mib(free)} available"
                )

    def run(self, progress: ProgressFn | None = None) -> list[BuildReport]:
        outs = {t: output_path(self.loaded, t, self.opts.out) for t in self.targets}
        if not self.opts.force:
            exist = [str(p) for p in outs.values() if p.exists()]
            if exist:
                raise BuildError(f"{exist[0]}: already exists (use --force to overwrite)")
        self._check_free_space(outs)
        reader = self._open_source()
        if not self.template_checked:
            self.template_checked = check_for_build(self.loaded, self.warn, source=reader)
        sha = self.loaded.sha256
        t0 = time.perf_counter()
        try:
            reports, digests = self._write_all(outs, reader, sha, progress)
        except OSError as e:
            # numpy's tofile reports a short write (the disk filled up mid-tensor) without errno
            if e.errno in _NO_ROOM or e.errno is None:
                names = ", ".join(p.name for p in outs.values())
                why = e.strerror if e.errno else f"short write, {e}: disk full or file size limit"
                raise BuildError(
                    f"{outs[self.targets[0]].parent}: cannot write {names}: {why} "
                    "(nothing was kept; free space and run again)"
                ) from None
            raise
        seconds = time.perf_counter() - t0
        out: list[BuildReport] = []
        for target, path in outs.items():
            plan = self.plans[target]
            rep = BuildReport(
                recipe=self.loaded.recipe.name,
                recipe_version=self.loaded.recipe.version,
                recipe_sha256=sha,
                target=target,
                file=path.name,
                sha256=digests[target],
                file_size=path.stat().st_size,
                predicted_size=plan.file_size,
                bpw=plan.bpw,
                imatrix=self.imatrix_name,
                source=self.loaded.recipe.model.source or "",
                dynq_version=__version__,
                seconds=round(seconds, 3),
                tensors=reports[target],
            )
            rpath = report_path(path)
            try:
                atomic_write_text(rpath, json.dumps(rep.to_json(), indent=1) + "\n")
            except OSError as e:
                if e.errno not in _NO_ROOM:
                    raise
                raise BuildError(
                    f"{rpath}: cannot write the build report: {e.strerror} "
                    f"({', '.join(p.name for p in outs.values())} complete; free space and run "
                    "again with --force)"
                ) from None
            out.append(rep)
        return out

    def _write_all(
        self, outs: dict[str, Path], reader: GGUFFile, sha: str, progress: ProgressFn | None
    ) -> tuple[dict[str, list[TensorReport]], dict[str, str]]:
        """Every target written to a temp file beside its final name, renamed when all are
        complete; any failure (Ctrl-C, a full disk) removes them all. Returns the tensor reports
        and each file's sha256 (hashed as it is written)."""
        with contextlib.ExitStack() as stack:
            writers: dict[str, gguf.GGUFWriter] = {}
            hashers: dict[str, _TailHasher] = {}
            tmps: dict[str, Path] = {}
            for target, path in outs.items():
                tmp = stack.enter_context(atomic_path(path))
                tmps[target] = tmp
                writers[target] = self._start_writer(tmp, reader, target, sha)
                hashers[target] = h = _TailHasher(tmp)
                stack.callback(h.close)
            reports: dict[str, list[TensorReport]] = {t: [] for t in self.targets}
            self._stream(reader, writers, hashers, reports, progress)
            for w in writers.values():
                w.close()
            digests = {t: h.hexdigest() for t, h in hashers.items()}
            for target, tmp in tmps.items():
                size = tmp.stat().st_size
                if size != self.plans[target].file_size:
                    raise BuildError(
                        f"{outs[target]}: internal error: wrote {size} bytes, the Plan predicted "
                        f"{self.plans[target].file_size}"
                    )
        return reports, digests

    def _start_writer(self, tmp: Path, reader: GGUFFile, target: str, sha: str) -> gguf.GGUFWriter:
        plan = self.plans[target]
        new = output_metadata(self.loaded, target, self.imatrix_ref)
        new[KEY_FILE_TYPE] = int(nearest_ftype(self.loaded, plan))
        new[KEY_RECIPE_SHA256] = sha
        if KEY_TEMPLATE_SOURCE_SHA256 in new:
            src_template = reader.get("tokenizer.chat_template")
            if isinstance(src_template, str):
                new[KEY_TEMPLATE_SOURCE_SHA256] = hashlib.sha256(src_template.encode()).hexdigest()
        if self.imatrix is not None:
            new[KEY_IMATRIX_ENTRIES] = len(self.imatrix)
            new[KEY_IMATRIX_CHUNKS] = self.imatrix.chunk_count
        w = GGUFWriter(tmp, plan.arch)
        _write_metadata(w, reader, new)
        for t in plan.tensors:
            w.add_tensor_info(
                t.name,
                tuple(reversed(t.shape)),
                np.dtype(np.float32),
                t.bytes,
                raw_dtype=t.type.gguf,
            )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        return w

    def _stream(
        self,
        reader: GGUFFile,
        writers: dict[str, gguf.GGUFWriter],
        hashers: dict[str, _TailHasher],
        reports: dict[str, list[TensorReport]],
        progress: ProgressFn | None,
    ) -> None:
        """Each source tensor read, quantized once per distinct type and written to every
        target, three tensors in flight: the next one read in a background thread while this
        one is quantized, and the last one written (and the written part of each file hashed)
        in two others.

        On the CPU the source's F32/F16 tensors are not read ahead but viewed in its memory map,
        the OS asked to read ahead of them: the kernels start on a tensor's first rows while
        the rest arrives (Gemma 3 270M's embedding, 0.67 GB, took 1.8 s to read before its
        quantization could start), and each tensor's pages are dropped after use. A GPU build
        keeps reading whole tensors ahead, which overlaps the reads with the GPU's work."""
        by_target = {t: p.tensors for t, p in self.plans.items()}
        n = len(reader.tensors)
        done_bytes = dict.fromkeys(self.targets, 0)
        mapped = self.opts.device in (None, "cpu")

        def load(i: int) -> tuple[np.ndarray | None, np.ndarray | None]:
            """Tensor ``i``'s stored bytes (if some target copies them) and floats (if some
            target quantizes them)."""
            src = reader.tensors[i]
            reader.prefetch(src.offset, _READ_AHEAD)
            raw = x = None
            for t in self.targets:
                pt = by_target[t][i]
                if pt.rule == "not quantized" and pt.type.gguf == src.type:
                    if raw is None:
                        raw = reader.read(src)
                elif x is None:
                    x = source_floats(reader, src, mapped)
            return raw, x

        def write(i: int, outputs: dict[str, tuple[np.ndarray, float | None]]) -> None:
            for target in self.targets:
                pt = by_target[target][i]
                writers[target].write_tensor_data(outputs[pt.type.name][0])
                writers[target].flush()
                hashers[target].catch_up()
                done_bytes[target] += pt.bytes
                if progress is not None:
                    progress(target, i + 1, done_bytes[target], n)

        with (
            ThreadPoolExecutor(1, thread_name_prefix="dynq-read") as reads,
            ThreadPoolExecutor(1, thread_name_prefix="dynq-write") as writes,
        ):
            ahead = reads.submit(load, 0) if n else None
            written: Future[None] | None = None
            for i in range(n):
                assert ahead is not None
                raw, x = ahead.result()
                ahead = reads.submit(load, i + 1) if i + 1 < n else None
                outputs: dict[str, tuple[np.ndarray, float | None]] = {}
                for target in self.targets:
                    pt = by_target[target][i]
                    key = pt.type.name
                    if key not in outputs:
                        if pt.rule == "not quantized" and pt.type.gguf == reader.tensors[i].type:
                            assert raw is not None
                            outputs[key] = (raw, None)
                        else:
                            assert x is not None
                            outputs[key] = self._encode(x, pt)
                    reports[target].append(TensorReport(pt.name, key, pt.bytes, outputs[key][1]))
                if mapped:
                    reader.release(reader.tensors[i])
                if written is not None:
                    written.result()  # one tensor's outputs waiting at most; a write error here
                written = writes.submit(write, i, outputs)
            if written is not None:
                written.result()

    def _encode(self, x: np.ndarray, pt: PlannedTensor) -> tuple[np.ndarray, float | None]:
        imp = self.imatrix.importance(pt.name) if self.imatrix is not None else None
        if imp is not None and imp.shape[-1] != x.shape[-1]:
            raise BuildError(
                f"imatrix entry '{pt.name}' has {imp.shape[-1]} columns, tensor has {x.shape[-1]}"
            )
        use_imp = imp if pt.type.is_quantized else None
        measure = self.opts.errors and pt.type.is_quantized
        data, num, den = quantize_tensor(x, pt.type, use_imp, self.opts.device, measure)
        if not measure:
            return data, None
        # sqrt(sum w·(x−q)² / sum w·x²): the imatrix-weighted relative RMS error
        return data, round((num / den) ** 0.5 if den > 0 else 0.0, 6)
