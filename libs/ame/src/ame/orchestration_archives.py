"""Reading an orchestration ZIP (seed 004) safely: what is refused, and which files become the project version.

Refused, with the reason: no `main.py`; more than one `requirements.txt`; a path that escapes the archive (absolute,
`..`, a backslash, a drive letter) or a symbolic link; an encrypted entry; a zip bomb (more than `max_files`
entries, more than `max_bytes` uncompressed in all, or an entry that inflates more than `max_ratio` times). The
sizes an archive declares can lie, so reading an entry stops at its declared size and refuses what goes past it.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from ame.domain.projects import ManifestError, check_path

__all__ = ["ArchiveError", "ArchiveLimits", "ArchivePlan", "inspect_archive", "read_entry"]

ENTRYPOINT = "main.py"
REQUIREMENTS = "requirements.txt"
# A small file compresses well for real (a file of spaces); the ratio limit only applies above this size.
_RATIO_FLOOR_BYTES = 1 << 20
_READ_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The archive is refused; the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 10_000
    max_bytes: int = 1 << 30
    max_ratio: int = 100


@dataclass(frozen=True)
class ArchivePlan:
    files: list[zipfile.ZipInfo]
    # The entrypoint's directory ('' for the root): task runs start `python main.py` there.
    entry_dir: str
    # The one requirements.txt, if any (its path in the archive).
    requirements: str | None


def _mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def inspect_archive(archive: zipfile.ZipFile, limits: ArchiveLimits) -> ArchivePlan:
    """Check the archive and say what it holds; raises ArchiveError naming the first problem."""
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise ArchiveError(f"the archive has {len(infos)} entries, over the limit of {limits.max_files} (a zip bomb?)")
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveError(f"entry {name[:200]!r} escapes the archive (an absolute path or a backslash)")
        if info.is_dir():
            continue
        if stat.S_ISLNK(_mode(info)):
            raise ArchiveError(f"entry {name[:200]!r} is a symbolic link; orchestrations hold regular files only")
        try:
            check_path(name)
        except ManifestError:
            raise ArchiveError(
                f"entry {name[:200]!r} escapes the archive or has an empty, '.' or '..' segment"
            ) from None
        if info.flag_bits & 0x1:
            raise ArchiveError(f"entry {name[:200]!r} is encrypted")
        if name in seen:
            raise ArchiveError(f"entry {name[:200]!r} appears twice in the archive")
        seen.add(name)
        total += info.file_size
        if total > limits.max_bytes:
            raise ArchiveError(
                f"the archive inflates to more than {limits.max_bytes} bytes, over the limit (a zip bomb?)"
            )
        if info.file_size > _RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveError(
                f"entry {name[:200]!r} inflates {info.file_size // max(info.compress_size, 1)} times, over the "
                f"limit of {limits.max_ratio} (a zip bomb?)"
            )
        files.append(info)
    names = [info.filename for info in files]
    # The root's main.py, else the first found in a subdirectory (archive order), as the seed says.
    entry = ENTRYPOINT if ENTRYPOINT in names else next((n for n in names if n.rsplit("/", 1)[-1] == ENTRYPOINT), "")
    if not entry:
        raise ArchiveError("the archive has no main.py (at its root or in a subdirectory); it is the entrypoint")
    requirements = [n for n in names if n.rsplit("/", 1)[-1] == REQUIREMENTS]
    if len(requirements) > 1:
        raise ArchiveError(
            f"the archive has {len(requirements)} requirements.txt files ({', '.join(requirements[:5])}); "
            "only one is allowed"
        )
    entry_dir = entry.rsplit("/", 1)[0] if "/" in entry else ""
    return ArchivePlan(files, entry_dir, requirements[0] if requirements else None)


def is_executable(info: zipfile.ZipInfo) -> bool:
    return bool(_mode(info) & 0o111)


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The entry's bytes in chunks, refusing more than it declares (a lying header is a zip bomb too)."""
    read = 0
    with archive.open(info) as source:
        while chunk := source.read(_READ_CHUNK):
            read += len(chunk)
            if read > info.file_size:
                raise ArchiveError(f"entry {info.filename[:200]!r} inflates past the size it declares (a zip bomb?)")
            yield chunk
