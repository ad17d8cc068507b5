"""Recipe-level evaluation and comparison: `dynq eval RECIPE` and `dynq compare RECIPE`.

A recipe's targets are judged against its full-precision source (for the bundled models, the
F32 dequantization of the shipped file, which is what the engine computes from it) on the
recipe's evaluation text, which is never its calibration text. The llama.cpp stock mixes named
in ``evaluation.baselines`` are built with the same kernels and imatrix, without the recipe's
rules, into ``<out>/baselines/``, and scored the same way. Every score is written as an
``.eval.json`` report beside its GGUF; ``compare`` reads the reports and marks the size/KLD
Pareto front.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dynq.errors import DynqError
from dynq.fsutil import atomic_write_text
from dynq.gguf_io import read_gguf
from dynq.outputs import (
    baseline_path,
    baselines_dir,
    eval_report_path,
    imatrix_path,
    out_dir,
    output_path,
    report_path,
)
from dynq.recipe import LoadedRecipe, Recipe, Target
from dynq.sources import check_file_ref, resolve_source, sha256_file

if TYPE_CHECKING:
    from dynq.build import BuildOptions


class CompareError(DynqError):
    """Evaluation or comparison cannot run: nothing built, no evaluation text, …"""


def baseline_recipe(loaded: LoadedRecipe) -> LoadedRecipe:
    """The recipe's baselines as a recipe of their own: the same model and calibration, one
    target per stock mix, and none of the recipe's rules."""
    r = loaded.recipe
    mixes = r.evaluation.baselines if r.evaluation is not None else []
    if not mixes:
        raise CompareError(f"{loaded.path}: evaluation.baselines: the recipe names no baselines")
    recipe = Recipe.model_validate(
        r.model_dump(exclude={"rules", "targets"})
        | {"targets": {m: Target(extends=f"llama.cpp:{m}").model_dump() for m in mixes}}
    )
    return LoadedRecipe(recipe, loaded.path, loaded.text)


def build_baselines(
    loaded: LoadedRecipe, opts: BuildOptions, warn: Callable[[str], None] = lambda m: None
) -> list[Path]:
    """Build the missing baseline files (existing ones are kept unless ``opts.force``)."""
    from dynq.build import Builder, BuildOptions

    base = baseline_recipe(loaded)
    todo = [
        m
        for m in base.recipe.targets
        if opts.force or not baseline_path(loaded, m, opts.out).exists()
    ]
    if todo:
        # the imatrix a build of the recipe itself would use lives in the recipe's folder
        computed = imatrix_path(loaded, opts.out)
        imatrix = opts.imatrix or (computed if computed.exists() else None)
        b_opts = BuildOptions(
            targets=todo,
            out=baselines_dir(loaded, opts.out),
            device=opts.device,
            imatrix=imatrix,
            force=opts.force,
            errors=opts.errors,
        )
        Builder(base, b_opts, warn=warn).run()
    return [baseline_path(loaded, m, opts.out) for m in base.recipe.targets]


def evaluation_text(loaded: LoadedRecipe) -> tuple[str, list[dict[str, str]]]:
    """The recipe's evaluation text (hash-checked) and its provenance for reports."""
    ev = loaded.recipe.evaluation
    if ev is None or not ev.text:
        raise CompareError(f"{loaded.path}: evaluation.text: the recipe names no evaluation text")
    cal = loaded.recipe.calibration
    cal_paths = {loaded.resolve(t.path).resolve() for t in (cal.text if cal else [])}
    parts, prov = [], []
    for ref in ev.text:
        path = loaded.resolve(ref.path)
        check_file_ref(path, ref.sha256)
        if path.resolve() in cal_paths:
            raise CompareError(
                f"{loaded.path}: evaluation.text: {ref.path} is also calibration text"
            )
        parts.append(path.read_text(encoding="utf-8"))
        prov.append({"path": ref.path, "sha256": ref.sha256 or sha256_file(path)})
    return "\n\n".join(parts), prov


def reference_path(loaded: LoadedRecipe) -> Path:
    model = loaded.recipe.model
    if model.source is None:
        raise CompareError(f"{loaded.path}: model.source: the recipe names no source GGUF")
    return resolve_source(model.source, loaded.dir, model.source_sha256)


def evaluate_files(
    loaded: LoadedRecipe,
    files: dict[str, Path],
    out: Path | None = None,
    device: str = "cpu",
    chunks: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """Score built files (label -> GGUF) against the source; write and return their reports."""
    from dynq.evaluate import evaluate

    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise CompareError(f"{missing[0]}: not built yet; run: dynq build {loaded.path}")
    text, prov = evaluation_text(loaded)
    ev = loaded.recipe.evaluation
    assert ev is not None
    n_chunks = chunks if chunks is not None else ev.chunks
    base = out_dir(loaded, out) / f"{loaded.recipe.name}.reference-{ev.ctx}x{n_chunks}.kld"
    base.parent.mkdir(parents=True, exist_ok=True)
    results = evaluate(
        reference_path(loaded),
        list(files.values()),
        text,
        ctx=ev.ctx,
        chunks=n_chunks,
        device=device,
        base_path=base,
        progress=progress,
    )
    reports = []
    for (label, path), res in zip(files.items(), results, strict=True):
        f = read_gguf(path)
        n = sum(t.shape[0] * _rows(t.shape) for t in f.tensors)
        data = sum(t.nbytes for t in f.tensors)
        rep: dict[str, object] = {
            "recipe": loaded.recipe.name,
            "recipe_version": loaded.recipe.version,
            "recipe_sha256": f.get("dynq.recipe.sha256"),
            "target": label,
            "file": path.name,
            "sha256": sha256_file(path),
            "file_size": path.stat().st_size,
            "bpw": data * 8 / n,
            "text": prov,
            "ctx": ev.ctx,
            "chunks": n_chunks,
            **res.to_json(),
        }
        rep.pop("path", None)
        atomic_write_text(eval_report_path(path), json.dumps(rep, indent=1) + "\n")
        reports.append(rep)
    return reports


def _rows(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


# -- compare ----------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    kind: str  # "target" or "baseline"
    file_size: int
    bpw: float
    report: dict[str, object] | None
    pareto: bool = False

    @property
    def mean_kld(self) -> float | None:
        v = self.report.get("mean_kld") if self.report else None
        return float(v) if isinstance(v, int | float) else None


def compare_rows(loaded: LoadedRecipe, out: Path | None = None) -> list[Row]:
    """Every target and baseline with its size (the built file, else the Plan) and its eval
    report where one exists; rows on the size/mean-KLD Pareto front are marked."""
    from dynq.plan import Resolver

    rows: list[Row] = []
    resolver = Resolver(loaded)
    for name in loaded.recipe.targets:
        rows.append(
            _row(output_path(loaded, name, out), name, "target", lambda n=name: resolver.plan(n))
        )
    ev = loaded.recipe.evaluation
    if ev is not None and ev.baselines:
        base = Resolver(baseline_recipe(loaded), resolver.inventory)
        for mix in ev.baselines:
            rows.append(
                _row(
                    baseline_path(loaded, mix, out),
                    f"llama.cpp:{mix}",
                    "baseline",
                    lambda m=mix: base.plan(m),
                )
            )
    scored = [r for r in rows if r.mean_kld is not None]
    for r in scored:
        r.pareto = not any(
            o is not r
            and o.file_size <= r.file_size
            and (o.mean_kld or 0) <= (r.mean_kld or 0)
            and (o.file_size < r.file_size or (o.mean_kld or 0) < (r.mean_kld or 0))
            for o in scored
        )
    return sorted(rows, key=lambda r: r.file_size)


def _row(gguf: Path, label: str, kind: str, plan) -> Row:
    ep = eval_report_path(gguf)
    if ep.exists():
        rep = json.loads(ep.read_text())
        return Row(label, kind, int(rep["file_size"]), float(rep["bpw"]), rep)
    rp = report_path(gguf)
    if rp.exists():
        b = json.loads(rp.read_text())
        return Row(label, kind, int(b["file_size"]), float(b["bpw"]), None)
    p = plan()
    return Row(label, kind, p.file_size, p.bpw, None)


def _fmt(v: object, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) else "—"


def render_table(rows: list[Row], markdown: bool = False) -> str:
    head = ["", "target", "size MB", "bpw", "PPL", "mean KLD", "p99 KLD", "top-1 %"]
    lines = []
    for r in rows:
        rep = r.report or {}
        top1 = rep.get("top1_agreement")
        lines.append(
            [
                "*" if r.pareto else "",
                r.label,
                f"{r.file_size / 1e6:,.1f}",
                f"{r.bpw:.3f}",
                _fmt(rep.get("ppl"), ".3f"),
                _fmt(rep.get("mean_kld"), ".5f"),
                _fmt(rep.get("p99_kld"), ".4f"),
                _fmt(top1 * 100 if isinstance(top1, int | float) else None, ".2f"),
            ]
        )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out) + "\n\n\\* on the size / mean-KLD Pareto front\n"
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    body = [line(head), *(line(c) for c in lines)]
    return "\n".join(body) + "\n* on the size / mean-KLD Pareto front\n"


def render_svg(rows: list[Row], title: str) -> str:
    """A size-vs-mean-KLD scatter (log KLD) as a self-contained SVG image."""
    import math

    pts = [(r.file_size / 1e6, r.mean_kld, r) for r in rows if r.mean_kld and r.mean_kld > 0]
    w, h, m = 720, 440, 60
    if not pts:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><text x="20" '
            f'y="40">{title}: no evaluation reports yet (dynq eval)</text></svg>\n'
        )
    xs = [p[0] for p in pts]
    ys = [math.log10(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1 += (x1 - x0) * 0.05 or 1
    y1 += (y1 - y0) * 0.05 or 0.1
    x0 -= (x1 - x0) * 0.05 or 1
    y0 -= (y1 - y0) * 0.05 or 0.1

    def sx(v: float) -> float:
        return m + (v - x0) / (x1 - x0) * (w - 2 * m)

    def sy(v: float) -> float:
        return h - m - (v - y0) / (y1 - y0) * (h - 2 * m)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="15">{title}</text>',
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
        f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 18}" text-anchor="middle">file size (MB)</text>',
        f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">'
        "mean KLD (log scale)</text>",
    ]
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{sx(xv)}" y="{h - m + 16}" text-anchor="middle">{xv:,.0f}</text>')
        out.append(f'<text x="{m - 6}" y="{sy(yv) + 4}" text-anchor="end">{10**yv:.3g}</text>')
    for kind, colour in (("baseline", "#888888"), ("target", "#d62728")):
        front = sorted((p for p in pts if p[2].kind == kind and p[2].pareto), key=lambda p: p[0])
        if len(front) > 1:
            d = " ".join(f"{sx(x):.1f},{sy(math.log10(y)):.1f}" for x, y, _ in front)
            out.append(
                f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-dasharray="4 3"/>'
            )
    for x, y, r in pts:
        colour = "#d62728" if r.kind == "target" else "#888888"
        cx, cy = sx(x), sy(math.log10(y))
        out.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{5 if r.pareto else 3.5}" fill="{colour}"/>'
        )
        out.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}">{r.label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
