"""Byte layout of a GGUF file (version 3), to predict a file's size before writing it.

Mirrors what ``gguf.GGUFWriter`` writes: a 24-byte preamble (magic, version, tensor and kv
counts), the key/values, the tensor infos, padding to the alignment, then each tensor's data
padded to the alignment. The build checks its output against this prediction to the byte.
"""

from __future__ import annotations

from collections.abc import Iterable

PREAMBLE = 4 + 4 + 8 + 8

_SCALAR_SIZES = {
    "u8": 1,
    "i8": 1,
    "u16": 2,
    "i16": 2,
    "u32": 4,
    "i32": 4,
    "f32": 4,
    "bool": 1,
    "u64": 8,
    "i64": 8,
    "f64": 8,
}


def pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def kv_size(key: str, value: object) -> int:
    """Encoded size of one key/value: key string, value type, value (str, int, float, bool)."""
    head = 8 + len(key.encode()) + 4
    if isinstance(value, bool):
        return head + 1
    if isinstance(value, str):
        return head + 8 + len(value.encode())
    if isinstance(value, int):
        return head + 4  # dynq writes integer metadata as uint32/int32, like llama.cpp's keys
    if isinstance(value, float):
        return head + 4
    raise TypeError(f"kv_size: unsupported value type {type(value).__name__} for {key}")


def tensor_info_size(name: str, n_dims: int) -> int:
    """Encoded size of one tensor info: name, n_dims, dims, type, offset."""
    return 8 + len(name.encode()) + 4 + 8 * n_dims + 4 + 8


def file_size(
    kv_sizes: Iterable[int],
    tensors: Iterable[tuple[str, int, int]],
    alignment: int = 32,
) -> int:
    """Size of a GGUF file: ``tensors`` are ``(name, n_dims, n_bytes)`` in file order."""
    header = PREAMBLE + sum(kv_sizes)
    data = 0
    for name, n_dims, n_bytes in tensors:
        header += tensor_info_size(name, n_dims)
        data += pad(n_bytes, alignment)
    return pad(header, alignment) + data
