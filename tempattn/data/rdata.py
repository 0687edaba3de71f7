"""A minimal reader for R's XDR serialization: ``.rda`` files and lazy-load databases (``.rdx``/``.rdb``).

R packages in Debian ship their data in these formats; this reads the object types data sets use
(NULL, symbols, pairlists, character, logical, integer, double and generic vectors, references)
into Python values: a vector with names becomes a dict, others a list (a matrix: its values in
R's column-major order); ``NA`` is None in a character vector and :data:`NA_INTEGER` in an integer
one. Anything else raises :class:`~tempattn.data.DataUnavailable` naming the type.
"""
import bz2
import gzip
import lzma
import pathlib
import struct
import zlib
from typing import Dict, Sequence

from .registry import DataCorrupted, DataUnavailable

__all__ = ["NA_INTEGER", "read_serialized", "read_rda", "read_lazy_load"]

NA_INTEGER = -2 ** 31

_NILVALUE, _REFSXP = 254, 255
_BYTES_LEVEL, _LATIN1_LEVEL = 1 << 1, 1 << 2  # a CHARSXP's encoding bits in its levels (flags >> 12)
_SYMSXP, _LISTSXP, _CHARSXP, _LGLSXP, _INTSXP, _REALSXP, _STRSXP, _VECSXP = 1, 2, 9, 10, 13, 14, 16, 19


class _Reader:
    """Reads R's XDR serialization (format 2 or 3), object by object (see the module docstring)."""

    def __init__(self, blob: bytes):
        if blob[:2] != b"X\n":
            raise DataUnavailable(f"not an R XDR serialization (starts with {blob[:2]!r})")
        self.blob, self.pos, self.symbols = blob, 2, []
        version = self._int()
        self.pos += 8  # writer and minimal reader R versions
        if version == 3:
            self.pos += 4 + self._int_at(self.pos)  # native encoding name

    def _int_at(self, pos: int) -> int:
        return struct.unpack_from(">i", self.blob, pos)[0]

    def _int(self) -> int:
        value = self._int_at(self.pos)
        self.pos += 4
        return value

    def _bytes(self, n: int) -> bytes:
        self.pos += n
        return self.blob[self.pos - n:self.pos]

    def _text(self, raw: bytes, levels: int) -> str:
        """A CHARSXP's bytes as text: latin-1 (or R's "bytes", kept byte for byte) when flagged, else UTF-8,
        strictly: undecodable bytes raise DataCorrupted (never replaced silently)."""
        encoding = "latin-1" if levels & (_LATIN1_LEVEL | _BYTES_LEVEL) else "utf-8"
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataCorrupted(f"R string at byte {self.pos - len(raw) + exc.start} of the serialization is not "
                                f"valid {encoding} ({exc.reason}); the file is damaged or not R data") from None

    def read(self):
        """The next object: list / str / int / float / bool values, a dict for a vector with names."""
        flags = self._int()
        kind, has_attributes, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == _NILVALUE:
            return None
        if kind == _REFSXP:
            index = flags >> 8 or self._int()
            return self.symbols[index - 1]
        if kind == _SYMSXP:
            self.symbols.append(self.read())
            return self.symbols[-1]
        if kind == _LISTSXP:
            return self._pairlist(has_attributes, has_tag)
        if kind == _CHARSXP:
            n = self._int()
            return None if n == -1 else self._text(self._bytes(n), flags >> 12)
        value = self._vector(kind)
        attributes = self.read() if has_attributes else {}
        names = attributes.get("names")
        return dict(zip(names, value)) if names else value

    def _vector(self, kind: int) -> list:
        n = self._int()
        if kind in (_STRSXP, _VECSXP):
            return [self.read() for _ in range(n)]
        if kind in (_LGLSXP, _INTSXP):
            return list(struct.unpack_from(f">{n}i", self._bytes(4 * n)))
        if kind == _REALSXP:
            return list(struct.unpack_from(f">{n}d", self._bytes(8 * n)))
        raise DataUnavailable(f"unsupported R object type {kind} in the serialized data")

    def _pairlist(self, has_attributes: int, has_tag: int) -> Dict:
        """A tagged pairlist (attributes) as a dict tag -> value."""
        if has_attributes:
            self.read()
        tag = self.read() if has_tag else None
        items = {tag: self.read()}
        rest = self.read()
        return {**items, **(rest or {})}


def read_lazy_load(index_blob: bytes, db_blob: bytes, names: Sequence[str]) -> Dict[str, object]:
    """Objects ``names`` of an R lazy-load database (``.rdx`` gzip'd index, ``.rdb`` zlib blobs)."""
    index = _Reader(gzip.decompress(index_blob)).read()
    if index.get("compressed") not in ([1], [True]):
        raise DataUnavailable(f"Rdata.rdb uses compression {index.get('compressed')}; only zlib (TRUE) is read")
    missing = [n for n in names if n not in index["variables"]]
    if missing:
        raise DataUnavailable(f"Rdata.rdx has no objects {missing}; it lists {sorted(index['variables'])}")
    objects = {}
    for name in names:
        offset, length = index["variables"][name]
        blob = db_blob[offset:offset + length]
        objects[name] = _Reader(zlib.decompress(blob[4:])).read()
    return objects


def read_serialized(blob: bytes):
    """The object of one XDR serialization (``b"X\\n"`` and what follows)."""
    return _Reader(blob).read()


def read_rda(path: pathlib.Path) -> Dict[str, object]:
    """The objects saved in an ``.rda`` / ``.RData`` file (gzip, bzip2 or xz compressed), by name."""
    raw = pathlib.Path(path).read_bytes()
    for decompress in (gzip.decompress, bz2.decompress, lzma.decompress):
        try:
            raw = decompress(raw)
            break
        except (OSError, ValueError, lzma.LZMAError):
            continue
    if raw[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise DataUnavailable(f"{pathlib.Path(path).name} is not an R data file (starts with {raw[:5]!r})")
    return read_serialized(raw[5:])
