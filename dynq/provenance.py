"""The key/values dynq sets in every output GGUF: provenance and llama.cpp's imatrix keys.

The Plan sizes the output's metadata from this same function, so the predicted file size and
the built file agree to the byte. Values here are those whose size is known before the build;
integer values are placeholders of the right width that the build fills in.
"""

from __future__ import annotations

from pathlib import Path

from dynq import __version__
from dynq.recipe import LoadedRecipe

KEY_RECIPE = "dynq.recipe.name"
KEY_RECIPE_VERSION = "dynq.recipe.version"
KEY_RECIPE_SHA256 = "dynq.recipe.sha256"
KEY_TARGET = "dynq.target"
KEY_VERSION = "dynq.version"

# llama.cpp's own keys (llama-quantize writes them; see LLM_KV_QUANTIZE_IMATRIX_* in llama-arch)
KEY_FILE_TYPE = "general.file_type"
KEY_QUANT_VERSION = "general.quantization_version"
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_CHUNKS = "quantize.imatrix.chunks_count"
IMATRIX_KEYS = (KEY_IMATRIX_FILE, KEY_IMATRIX_DATASET, KEY_IMATRIX_ENTRIES, KEY_IMATRIX_CHUNKS)


def imatrix_file_name(loaded: LoadedRecipe) -> str:
    """The imatrix file name recorded in outputs: the imported file's, or the computed one's."""
    cal = loaded.recipe.calibration
    if cal is not None and cal.imatrix is not None:
        return Path(cal.imatrix.path).name
    return f"{loaded.recipe.name}.imatrix.gguf"


def imatrix_dataset(loaded: LoadedRecipe) -> str:
    cal = loaded.recipe.calibration
    if cal is None:
        return ""
    if cal.imatrix is not None:
        return Path(cal.imatrix.path).name
    return ",".join(Path(t.path).name for t in cal.text)


def output_metadata(loaded: LoadedRecipe, target: str, use_imatrix: bool) -> dict[str, object]:
    """Keys the build sets (replacing the source's) with values of their final size."""
    out: dict[str, object] = {
        KEY_FILE_TYPE: 0,
        KEY_QUANT_VERSION: 2,
        KEY_RECIPE: loaded.recipe.name,
        KEY_RECIPE_VERSION: loaded.recipe.version,
        KEY_RECIPE_SHA256: "0" * 64,
        KEY_TARGET: target,
        KEY_VERSION: __version__,
    }
    if use_imatrix:
        out[KEY_IMATRIX_FILE] = imatrix_file_name(loaded)
        out[KEY_IMATRIX_DATASET] = imatrix_dataset(loaded)
        out[KEY_IMATRIX_ENTRIES] = 0
        out[KEY_IMATRIX_CHUNKS] = 0
    return out
