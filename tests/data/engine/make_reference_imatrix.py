"""Produce ``reference_imatrix.npz``: llama-imatrix's statistics for three layers per model on
two 128-token chunks of a stored text.

Not run in CI (needs llama.cpp and the model files). Run from the repository root:

    python tests/data/engine/make_reference_imatrix.py --bin /work/ext/llama-build/bin

For each model it runs ``llama-imatrix -c 128 --chunks 2 --no-escape --no-ppl -f TEXT`` on the
model file as shipped ("quant") and on the same weights dequantized to F32 ("f32", see
make_reference_logits.py), and keeps in_sum2 and counts of the first, middle and last layers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent.parent))
from dynq.imatrix_file import load_imatrix  # noqa: E402
from tests.data.engine.make_reference_logits import models  # noqa: E402

TEXT = HERE / "texts" / "textwrap.py.txt"
CTX, CHUNKS = 128, 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="/work/ext/llama-build/bin")
    args = ap.parse_args()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models().items():
            f32 = Path(tmp) / f"{name}-f32.gguf"
            subprocess.run(
                [f"{args.bin}/llama-quantize", "--allow-requantize", str(path), str(f32), "F32"],
                check=True,
                capture_output=True,
            )
            for kind, model in (("quant", path), ("f32", f32)):
                out = Path(tmp) / f"{name}-{kind}.imatrix.gguf"
                subprocess.run(
                    [
                        f"{args.bin}/llama-imatrix",
                        "-m",
                        str(model),
                        "-f",
                        str(TEXT),
                        "-c",
                        str(CTX),
                        "--chunks",
                        str(CHUNKS),
                        "-t",
                        "2",
                        "--no-escape",
                        "--no-ppl",
                        "-o",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                )
                im = load_imatrix(out)
                n_layer = 1 + max(int(k.split(".")[1]) for k in im.sums)
                keep = {0, n_layer // 2, n_layer - 1}
                for k in im.sums:
                    if int(k.split(".")[1]) in keep:
                        arrays[f"{name}/{kind}/{k}/in_sum2"] = im.sums[k][0].astype(np.float32)
                        arrays[f"{name}/{kind}/{k}/counts"] = np.array(im.counts[k][0])
            f32.unlink()
    np.savez_compressed(HERE / "reference_imatrix.npz", **arrays)


if __name__ == "__main__":
    main()
