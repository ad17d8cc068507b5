"""The GGUF header parser: values and tensors as gguf's own reader sees them, one-line errors."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from dynq.errors import InventoryError
from dynq.gguf_io import GGUFWriter, read_gguf


def _write(path: Path, tokens: list[str | bytes]) -> np.ndarray:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0][: len(tokens)])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    x = np.arange(64, dtype=np.float32).reshape(2, 32)
    w.add_tensor("blk.0.attn_norm.weight", x)
    w.add_tensor("output_norm.weight", x[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return x


def test_read_gguf_matches_gguf_reader(tmp_path):
    p = tmp_path / "t.gguf"
    x = _write(p, ["a", "b", "ĠΩ"])
    f = read_gguf(p)
    assert f.arch == "llama" and f.arch_key("block_count") == 2
    assert f.get("tokenizer.ggml.tokens") == ["a", "b", "ĠΩ"]
    assert f.get("tokenizer.ggml.scores") == [0.5, -1.0, 2.0]
    assert f.fields["tokenizer.ggml.scores"].sub_type == gguf.GGUFValueType.FLOAT32
    assert f.get("tokenizer.ggml.add_bos_token") is True
    assert [t.name for t in f.tensors] == ["blk.0.attn_norm.weight", "output_norm.weight"]
    t = f.by_name["blk.0.attn_norm.weight"]
    assert t.shape == (32, 2) and t.type == gguf.GGMLQuantizationType.F32 and t.nbytes == 256
    np.testing.assert_array_equal(f.raw(t).view(np.float32).reshape(2, 32), x)
    np.testing.assert_array_equal(f.array(t), x)
    np.testing.assert_array_equal(f.array(t, copy=True), x)
    # a mapped view stays right after its pages are dropped (they come back from the file)
    view = f.array(t)
    f.prefetch(t.offset, t.nbytes)
    f.release(t)
    np.testing.assert_array_equal(view, x)
    r = gguf.GGUFReader(p)
    assert [rt.data_offset for rt in r.tensors] == [t.offset for t in f.tensors]
    # each key/value's encoded size: together they fill the header up to the tensor directory
    tensor_info = p.read_bytes().index(_s("blk.0.attn_norm.weight"))
    assert 24 + sum(kv.nbytes for kv in f.fields.values()) == tensor_info


def test_strings_keep_bytes_that_are_not_utf8(tmp_path):
    p = tmp_path / "t.gguf"
    _write(p, ["a", b"\xff\xfe", "ĠΩ"])
    tokens = read_gguf(p).get("tokenizer.ggml.tokens")
    assert [s.encode("utf-8", "surrogateescape") for s in tokens] == [
        b"a",
        b"\xff\xfe",
        "ĠΩ".encode(),
    ]


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def _tensor(name: str, ggml_type: int) -> bytes:
    return _s(name) + struct.pack("<IQIQ", 1, 32, ggml_type, 0)


def _valid(tmp_path: Path) -> bytes:
    p = tmp_path / "valid.gguf"
    _write(p, ["a", "b", "c"])
    return p.read_bytes()


def _truncated_in_vocabulary(d: Path) -> bytes:
    b = _valid(d)
    # one byte short of the last token (the next key's 8-byte length precedes it)
    return b[: b.index(b"tokenizer.ggml.scores") - 9]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(lambda d: b"NOPE" + bytes(40), "not a GGUF file", id="magic"),
        pytest.param(lambda d: _valid(d)[:30], "truncated GGUF header at byte", id="header"),
        pytest.param(_truncated_in_vocabulary, "truncated GGUF header", id="vocabulary"),
        pytest.param(
            lambda d: _header(0, 1) + _s("k") + struct.pack("<IIQ", 9, 8, 1 << 40),
            "truncated GGUF header",
            id="string-count",
        ),
        pytest.param(
            lambda d: _header(0, 1) + _s("k") + struct.pack("<I", 99),
            "key 'k': unknown value type 99",
            id="value-type",
        ),
        pytest.param(
            lambda d: _header(0, 1) + _s("k") + struct.pack("<IIQ", 9, 99, 1),
            "key 'k': unknown value type 99",
            id="array-type",
        ),
        pytest.param(
            lambda d: _header(1, 0) + _tensor("t", 999),
            "tensor 't': unknown GGML type 999",
            id="ggml-type",
        ),
        pytest.param(
            lambda d: _header(1, 0) + _tensor("t", 0),
            r"truncated GGUF: tensor 't' ends at byte 192, beyond the end of the file \(57 bytes\)",
            id="data",
        ),
        pytest.param(
            lambda d: _valid(d)[:-4],
            "truncated GGUF: tensor 'output_norm.weight' ends at byte",
            id="last-tensor",
        ),
    ],
)
def test_errors_name_the_file(tmp_path, content, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content(tmp_path))
    with pytest.raises(InventoryError, match=message) as e:
        read_gguf(bad)
    assert str(e.value).startswith(f"{bad}: ") and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError, match=r"missing\.gguf: file not found"):
        read_gguf(tmp_path / "missing.gguf")


def _kv_file(cls: type[gguf.GGUFWriter], path: Path, fields: list[tuple]) -> bytes:
    w = cls(str(path), "llama")
    for key, val, vtype, sub in fields:
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.add_tensor("output_norm.weight", np.arange(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_writer_packs_the_same_bytes_as_gguf(tmp_path: Path):
    V = gguf.GGUFValueType
    fields = [
        ("general.name", "naïve 模型", V.STRING, None),
        ("tokenizer.ggml.tokens", ["a", "ü", "", "<|im_start|>", "🙂"], V.ARRAY, V.STRING),
        ("tokenizer.ggml.scores", [0.5, -1.0, 1e-40, 3.4e38], V.ARRAY, V.FLOAT32),
        ("tokenizer.ggml.token_type", [1, 2, 3, -4], V.ARRAY, V.INT32),
        ("x.u8", [0, 255], V.ARRAY, V.UINT8),
        ("x.u64", [2**64 - 1, 0], V.ARRAY, V.UINT64),
        ("x.f64", [0.1, -2.5], V.ARRAY, V.FLOAT64),
        ("x.bools", [True, False, True], V.ARRAY, V.BOOL),
        ("x.count", 7, V.UINT32, None),
    ]
    ours = _kv_file(GGUFWriter, tmp_path / "a.gguf", fields)
    theirs = _kv_file(gguf.GGUFWriter, tmp_path / "b.gguf", fields)
    assert ours == theirs


def test_writer_keeps_non_utf8_metadata(tmp_path: Path):
    """Bytes that are not UTF-8 (read as lone surrogates) are written back as they were."""
    src = tmp_path / "src.gguf"
    _write(src, ["a", b"\xff\xfe", "c"])
    f = read_gguf(src)
    V = gguf.GGUFValueType
    fields = [(k, kv.value, kv.type, kv.sub_type) for k, kv in f.fields.items()
              if not k.startswith("GGUF.") and k != "general.architecture"]  # fmt: skip
    _kv_file(GGUFWriter, tmp_path / "out.gguf", fields)
    back = read_gguf(tmp_path / "out.gguf")
    assert back.get("tokenizer.ggml.tokens") == f.get("tokenizer.ggml.tokens")
    raw = gguf.GGUFReader(tmp_path / "out.gguf").fields["tokenizer.ggml.tokens"]
    assert bytes(raw.parts[raw.data[1]]) == b"\xff\xfe"
    assert V.ARRAY == back.fields["tokenizer.ggml.tokens"].type
