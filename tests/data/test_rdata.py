"""tempattn.data.rdata on hand-built R serializations: vectors, names, NA, references, .rda files, errors."""
import gzip
import struct

import pytest

from tempattn.data import DataUnavailable
from tempattn.data.rdata import NA_INTEGER, read_rda, read_serialized

HEADER_V3 = b"X\n" + struct.pack(">iiii", 3, 0x040201, 0x030500, 5) + b"UTF-8"
HEADER_V2 = b"X\n" + struct.pack(">iii", 2, 0x040201, 0x020300)


def xdr_int(*values):
    return b"".join(struct.pack(">i", v) for v in values)


def xdr_string(text):
    return xdr_int(0x00040009, len(text)) + text.encode()


def named(names):
    """An attribute pairlist holding just ``names``, then the end of the pairlist."""
    return (xdr_int(0x402, 1) + xdr_string("names") + xdr_int(16, len(names)) + b"".join(map(xdr_string, names))
            + xdr_int(254))


def test_named_list_of_character_and_integer_vectors_with_na():
    """list(a = c("x", NA), b = 7L)."""
    strings = xdr_int(16, 2) + xdr_string("x") + xdr_int(0x00000009, -1)
    blob = HEADER_V3 + xdr_int(19 | (1 << 9), 2) + strings + xdr_int(13, 1, 7) + named(["a", "b"])
    assert read_serialized(blob) == {"a": ["x", None], "b": [7]}


def test_double_logical_and_na_integer_vectors():
    doubles = xdr_int(14, 2) + struct.pack(">dd", 1.5, -2.0)
    logicals = xdr_int(10, 2, 1, 0)
    integers = xdr_int(13, 2, NA_INTEGER, 3)
    blob = HEADER_V2 + xdr_int(19 | (1 << 9), 3) + doubles + logicals + integers + named(["d", "l", "i"])
    assert read_serialized(blob) == {"d": [1.5, -2.0], "l": [1, 0], "i": [NA_INTEGER, 3]}


def test_symbol_references_resolve_to_the_first_occurrence():
    """Two attribute pairlists tagged `names`: the second tag is a reference (REFSXP) to the first symbol."""
    first = xdr_int(0x402, 1) + xdr_string("names") + xdr_int(16, 1) + xdr_string("a") + xdr_int(254)
    second = xdr_int(0x402) + xdr_int(255 | (1 << 8)) + xdr_int(16, 1) + xdr_string("b") + xdr_int(254)
    blob = (HEADER_V3 + xdr_int(19 | (1 << 9), 1) + xdr_int(19 | (1 << 9), 1) + xdr_int(13, 1, 5) + first
            + second)
    assert read_serialized(blob) == {"b": {"a": [5]}}


def test_rda_file_round_trip(tmp_path):
    """save(x = 1:2): a gzip'd RDX2 stream holding the pairlist x -> c(1L, 2L)."""
    body = xdr_int(0x402, 1) + xdr_string("x") + xdr_int(13, 2, 1, 2) + xdr_int(254)
    path = tmp_path / "x.rda"
    path.write_bytes(gzip.compress(b"RDX2\n" + HEADER_V2 + body))
    assert read_rda(path) == {"x": [1, 2]}


def test_not_r_data_and_unsupported_types_are_clear_errors(tmp_path):
    path = tmp_path / "bad.rda"
    path.write_bytes(gzip.compress(b"PK\x03\x04 not R"))
    with pytest.raises(DataUnavailable, match="bad.rda is not an R data file"):
        read_rda(path)
    with pytest.raises(DataUnavailable, match="not an R XDR serialization"):
        read_serialized(b"A\n")
    with pytest.raises(DataUnavailable, match="unsupported R object type 238"):
        read_serialized(HEADER_V3 + xdr_int(238, 0))


def test_strings_decode_strictly_by_their_encoding_flag():
    """UTF-8 and latin-1 (flag 1 << 2 in the levels) decode; bytes that are not UTF-8 in a UTF-8 string are
    DataCorrupted naming the byte, never replaced silently."""
    from tempattn.data import DataCorrupted
    utf8 = xdr_int(0x00080009, 3) + "é".encode() + b"a"
    latin1 = xdr_int(0x00040009 | (1 << 14), 2) + "ü".encode("latin-1") + b"b"
    assert read_serialized(HEADER_V3 + xdr_int(16, 2) + utf8 + latin1) == ["éa", "üb"]
    damaged = xdr_int(0x00080009, 3) + b"a\xff\xfe"
    with pytest.raises(DataCorrupted, match="byte .* not valid utf-8"):
        read_serialized(HEADER_V3 + xdr_int(16, 1) + damaged)
