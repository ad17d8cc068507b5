"""Measured sensitivity: what each tensor's type costs in KLD, for ``dynq tune``.

Exact single-tensor KLD for every (tensor, type) pair costs a forward pass each. The estimate
used instead, for a tensor ``W`` quantized to ``t`` (``ΔW = dequantize(quantize(W, t)) − W``):

* a weight matrix: ``e = Σ_j imp_j · Σ_i ΔW_ij²``, the expected squared error of its output
  ``ΔW·x`` on the calibration activations when their columns are uncorrelated (``imp_j`` is the
  imatrix's mean squared activation of input column ``j``);
* the token embedding (a lookup, not a product): the mean squared error of a row.

Within one tensor kind and layer, KLD grows with ``e`` roughly in proportion, but how much an
error costs differs between kinds and depths. So a few exact probes — the tensor alone quantized,
the model run on calibration chunks, KLD against the unquantized run — give a scale
``α = KLD / e`` per kind at the first, middle and last layer, interpolated in log space over the
layers between; the predicted cost of a pair is ``α(kind, layer) · e``. How faithful that is gets
measured on a seeded sample of other pairs (Spearman rank correlation of predicted against exact
KLD) and stored with the result.

Results go to ``<recipe dir>/measurements/<name>.json`` (the format ``dynq tune`` reads), keyed
by the sha256 of the source, the imatrix, the calibration settings, the candidate types and the
dynq version; an interrupted run resumes from ``<name>.partial.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dynq import __version__, kernels, qtypes, stock
from dynq.errors import DynqError
from dynq.fsutil import atomic_write_text

if TYPE_CHECKING:
    from dynq.gguf_io import GGUFFile
    from dynq.recipe import LoadedRecipe

FORMAT = 1
#: candidate types by default: those the CPU kernels quantize at tens of MB/s or more
DEFAULT_TYPES = (
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "IQ4_NL",
    "IQ4_XS",
)
#: the 1–3 bit grid types: add them with ``--types`` (slow on a CPU; use ``--device cuda``)
LOWBIT_TYPES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")

Say = Callable[[str], None]


class MeasureError(DynqError):
    """The measurement cannot run (no calibration text, unsupported model, bad types)."""


def measurement_path(loaded: LoadedRecipe) -> Path:
    return loaded.dir / "measurements" / f"{loaded.recipe.name}.json"


def parse_types(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return DEFAULT_TYPES
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part.lower() == "default":
            out += DEFAULT_TYPES
        elif part.lower() == "lowbit":
            out += LOWBIT_TYPES
        elif part:
            try:
                out.append(qtypes.get(part).name)
            except DynqError as e:
                raise MeasureError(f"--types: {e}") from None
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class _Tensor:
    name: str
    kind: str  # "ffn_down", "token_embd", ...
    layer: int | None
    shape: tuple[int, ...]  # GGUF order: ne0 first


def _groups(loaded: LoadedRecipe) -> list[_Tensor]:
    from dynq.inventory import load_inventory

    inv = load_inventory(loaded.resolve(loaded.recipe.model.inventory))
    out = []
    for t in inv.tensors:
        if len(t.shape) < 2 or not stock.is_quantizable(t, loaded.recipe.model.arch):
            continue
        kind = t.kind.removesuffix(".weight")
        out.append(_Tensor(t.name, kind, t.layer, tuple(t.shape)))
    return out


def _effective(types: tuple[str, ...], ne0: int) -> list[qtypes.GGMLType]:
    seen: dict[str, qtypes.GGMLType] = {}
    for name in types:
        t = stock.fallback(qtypes.get(name), ne0)
        if t.is_quantized:
            seen.setdefault(t.name, t)
    return list(seen.values())


def _error(
    x: np.ndarray, t: qtypes.GGMLType, imp: np.ndarray | None, device: str
) -> tuple[float, np.ndarray]:
    """The estimate ``e`` (module docstring) and the quantized bytes."""
    from dynq.build import quantize_tensor

    data, num, _ = quantize_tensor(x, t, imp, device, measure=True)
    if imp is None:  # a lookup table: the mean squared error of a row
        num /= x.reshape(-1, x.shape[-1]).shape[0]
    return num, data


class _Prober:
    """Exact KLD of the model with one tensor replaced, against the unquantized model, on a few
    calibration chunks. The residual stream entering every layer is cached, so a probe runs
    only the layers from the replaced tensor's on; the weights are the engine's (kept in memory
    for a model that fits its cache, streamed otherwise)."""

    def __init__(self, gf: GGUFFile, tokens: torch.Tensor, device: str) -> None:
        from dynq.engine.model import load_model

        self.model = load_model(gf, device)
        self.tokens = tokens.to(self.model.device)
        with torch.inference_mode():
            x = self.model.embed(self.tokens)
            self.inputs = []
            for il in range(self.model.n_layer):
                self.inputs.append(x)
                x = self.model.layer(il, x, self.model.w.layer(il))
            self.ref = torch.log_softmax(self.model.project(self.model.final(x)).float(), -1)

    @torch.inference_mode()
    def kld(self, name: str, weight: torch.Tensor, layer: int | None) -> float:
        m = self.model
        m.w.overrides = {name: weight.to(m.device)}
        m.release()  # the output matrix may be the replaced (tied) embedding
        try:
            start = layer if layer is not None else 0
            x = m.embed(self.tokens) if layer is None else self.inputs[start]
            for il in range(start, m.n_layer):
                x = m.layer(il, x, m.w.layer(il))
            logq = torch.log_softmax(m.project(m.final(x)).float(), -1)
            p = self.ref.exp()
            return float((p * (self.ref - logq)).sum(-1).mean())
        finally:
            m.w.overrides = {}
            m.release()


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _interp_log(points: dict[int, float], layer: int) -> float:
    """``α`` at ``layer`` from probe layers, linear in log space, constant beyond the ends."""
    xs = sorted(points)
    if layer <= xs[0]:
        return points[xs[0]]
    if layer >= xs[-1]:
        return points[xs[-1]]
    for a, b in itertools.pairwise(xs):
        if a <= layer <= b:
            f = (layer - a) / (b - a)
            return math.exp((1 - f) * math.log(points[a]) + f * math.log(points[b]))
    raise AssertionError


def measure(
    loaded: LoadedRecipe,
    *,
    types: tuple[str, ...] | None = None,
    device: str = "cpu",
    out: Path | None = None,
    probe_chunks: int | None = None,
    sample: int | None = None,
    force: bool = False,
    say: Say = lambda m: None,
) -> tuple[dict, Path]:
    """Measure (or read back) the recipe's sensitivities; returns the JSON object and its path.

    ``types``, ``probe_chunks`` and ``sample`` left None come from the recipe's ``[measure]``
    table (its defaults: the default types, 2 chunks, 24 pairs)."""
    from dynq.calibration import calibration_tokens, dataset_label, recipe_imatrix
    from dynq.compare import reference_path
    from dynq.evaluate import make_chunks
    from dynq.gguf_io import read_gguf
    from dynq.recipe import Measure
    from dynq.sources import sha256_file

    spec = loaded.recipe.measure or Measure()
    types = types if types is not None else parse_types(",".join(spec.types))
    probe_chunks = probe_chunks if probe_chunks is not None else spec.probe_chunks
    sample = sample if sample is not None else spec.sample
    cal = loaded.recipe.calibration
    if cal is None or not cal.text:
        raise MeasureError(f"{loaded.path}: calibration.text: measuring needs calibration text")
    src = reference_path(loaded)
    im, im_path = recipe_imatrix(loaded, out, device, say)
    assert im is not None and im_path is not None
    key = hashlib.sha256(
        json.dumps(
            [
                sha256_file(src),
                sha256_file(im_path),
                dataset_label(loaded),
                list(types),
                probe_chunks,
                sample,
                __version__,
            ]
        ).encode()
    ).hexdigest()
    path = measurement_path(loaded)
    if path.exists() and not force:
        done = json.loads(path.read_text())
        if done.get("key") == key:
            say(f"{path}: up to date")
            return done, path
    partial = path.with_suffix(".partial.json")
    state: dict = {"key": key, "errors": {}, "probes": {}}
    if partial.exists():
        prev = json.loads(partial.read_text())
        if prev.get("key") == key:
            state = prev
            say(f"{partial}: resuming ({len(state['errors'])} tensors done)")
    path.parent.mkdir(parents=True, exist_ok=True)

    def save_state() -> None:
        atomic_write_text(partial, json.dumps(state))

    t0 = time.perf_counter()
    tensors = _groups(loaded)
    info = {t.name: t for t in tensors}
    reader = read_gguf(src)
    from dynq.build import source_floats

    # 1. the estimate e for every (tensor, candidate type)
    for i, t in enumerate(tensors):
        if t.name in state["errors"]:
            continue
        x = source_floats(reader, reader.by_name[t.name])
        imp = im.importance(t.name) if t.kind != "token_embd" else None
        errs = {}
        for qt in _effective(types, t.shape[0]):
            errs[qt.name], _ = _error(x, qt, imp, device)
        state["errors"][t.name] = errs
        save_state()
        say(f"measure: errors {i + 1}/{len(tensors)} {t.name}")

    # 2. exact probes: per kind at the first, middle and last layer; plus a seeded sample
    ct = calibration_tokens(loaded, src)
    bos = reader.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(
        reader.get("tokenizer.ggml.add_bos_token", reader.get("tokenizer.ggml.model") == "llama")
    )
    chunks = make_chunks(ct.tokens, cal.ctx, probe_chunks, bos, add_bos)
    by_kind: dict[str, list[_Tensor]] = {}
    for t in tensors:
        by_kind.setdefault(t.kind, []).append(t)
    plan: list[tuple[str, str, str]] = []  # (role, tensor, type)
    for ts in by_kind.values():
        picks = [ts[0], ts[len(ts) // 2], ts[-1]] if len(ts) > 2 else ts
        for t in dict.fromkeys(picks, None):
            errs = state["errors"][t.name]
            # the probe type: the candidate of median error (a cost neither lost in noise nor
            # saturated)
            order = sorted(errs, key=errs.get)
            plan.append(("probe", t.name, order[len(order) // 2]))
    rng = random.Random(0)
    pairs = [(t.name, q) for t in tensors for q in state["errors"][t.name]]
    probed = {(n, q) for _, n, q in plan}
    rest = [p for p in pairs if p not in probed]
    for n, q in rng.sample(rest, min(sample, len(rest))):
        plan.append(("sample", n, q))
    todo = [p for p in plan if f"{p[1]}|{p[2]}" not in state["probes"]]
    if todo:
        say(f"measure: {len(todo)} exact KLD probes on {chunks.shape[0]}×{chunks.shape[1]} tokens")
        prober = _Prober(reader, chunks, device)
        for j, (_, name, q) in enumerate(todo):
            t = info[name]
            x = source_floats(reader, reader.by_name[name])
            imp = im.importance(name) if t.kind != "token_embd" else None
            _, data = _error(x, qtypes.get(q), imp, device)
            w = torch.from_numpy(kernels.dequantize(data, q, t.shape))
            kld = state["probes"][f"{name}|{q}"] = prober.kld(name, w, t.layer)
            say(f"measure: probe {j + 1}/{len(todo)} {name} {q}: KLD {kld:.3g}")
            save_state()

    # 3. scales per kind and layer, predictions, faithfulness
    alpha: dict[str, dict[int, float]] = {}
    for role, name, q in plan:
        if role != "probe":
            continue
        e = state["errors"][name][q]
        k = state["probes"][f"{name}|{q}"]
        t = info[name]
        a = max(k, 1e-12) / max(e, 1e-30)
        alpha.setdefault(t.kind, {})[t.layer if t.layer is not None else -1] = a

    def predict(name: str, q: str) -> float:
        t = info[name]
        pts = alpha[t.kind]
        a = _interp_log(pts, t.layer if t.layer is not None else -1)
        return a * state["errors"][name][q]

    sampled = [(n, q) for role, n, q in plan if role == "sample"]
    pred = [predict(n, q) for n, q in sampled]
    exact = [state["probes"][f"{n}|{q}"] for n, q in sampled]
    result = {
        "format": FORMAT,
        "recipe": loaded.recipe.name,
        "key": key,
        "method": (
            "imatrix-weighted output error per (tensor, type), scaled per tensor kind by exact "
            f"single-tensor KLD probes at the first, middle and last layer ({probe_chunks} "
            f"calibration chunks of {cal.ctx} tokens)"
        ),
        "source_sha256": sha256_file(src),
        "imatrix_sha256": sha256_file(im_path),
        "calibration": dataset_label(loaded),
        "types": list(types),
        "dynq_version": __version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "faithfulness": {
            "pairs": len(sampled),
            "spearman": _spearman(pred, exact),
            "sample": [
                {"tensor": n, "type": q, "predicted": p, "exact": e}
                for (n, q), p, e in zip(sampled, pred, exact, strict=True)
            ],
        },
        "groups": [
            {
                "name": t.name.removesuffix(".weight"),
                "kind": t.kind,
                "layer": t.layer,
                "tensors": [t.name],
                "costs": {q: predict(t.name, q) for q in state["errors"][t.name]},
            }
            for t in tensors
        ],
    }
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    return result, path
