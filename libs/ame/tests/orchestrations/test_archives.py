"""What an orchestration ZIP may hold: main.py at the root or in a subdirectory, one requirements.txt, no escape, no
bomb."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from ame.orchestration_archives import ArchiveError, ArchiveLimits, inspect_archive, read_entry


def _archive(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as out:
        for name, data in files.items():
            out.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def test_main_py_at_the_root_wins_over_one_in_a_subdirectory() -> None:
    plan = inspect_archive(
        _archive({"lib/main.py": b"", "main.py": b"", "requirements.txt": b"six\n"}), ArchiveLimits()
    )
    assert (plan.entry_dir, plan.requirements) == ("", "requirements.txt")
    assert [i.filename for i in plan.files] == ["lib/main.py", "main.py", "requirements.txt"]


def test_else_the_first_main_py_found_in_a_subdirectory() -> None:
    plan = inspect_archive(
        _archive({"hello/": b"", "hello/main.py": b"", "other/main.py": b"", "hello/requirements.txt": b""}),
        ArchiveLimits(),
    )
    assert (plan.entry_dir, plan.requirements) == ("hello", "hello/requirements.txt")
    assert "hello/" not in [i.filename for i in plan.files]


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"run.py": b""}, "no main.py"),
        ({"main.py": b"", "requirements.txt": b"", "a/requirements.txt": b""}, "2 requirements.txt"),
        ({"main.py": b"", "../up.py": b""}, "escapes the archive"),
        ({"main.py": b"", "a/../../up.py": b""}, "escapes the archive"),
        ({"main.py": b"", "/etc/passwd": b""}, "escapes the archive"),
        ({"main.py": b"", "a\\b.py": b""}, "escapes the archive"),
        ({"main.py": b"", "C:/x.py": b""}, "escapes the archive"),
        ({"main.py": b"", "zeros": b"\0" * (4 << 20)}, "inflates"),
    ],
)
def test_refusals_say_why(files: dict[str, bytes], reason: str) -> None:
    with pytest.raises(ArchiveError, match=reason):
        inspect_archive(_archive(files), ArchiveLimits())


def test_size_and_count_limits_refuse_a_bomb() -> None:
    files = {"main.py": b"x" * 100, "b.txt": b"y" * 100}
    with pytest.raises(ArchiveError, match="more than 150 bytes"):
        inspect_archive(_archive(files, compression=zipfile.ZIP_STORED), ArchiveLimits(max_bytes=150))
    with pytest.raises(ArchiveError, match="2 entries, over the limit of 1"):
        inspect_archive(_archive(files), ArchiveLimits(max_files=1))


def test_a_symbolic_link_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("main.py", b"")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(link, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        inspect_archive(zipfile.ZipFile(io.BytesIO(buffer.getvalue())), ArchiveLimits())


def test_an_entry_that_inflates_past_its_declared_size_is_refused() -> None:
    archive = _archive({"main.py": b"print('hello world')\n" * 10})
    info = archive.getinfo("main.py")
    info.file_size = 5  # a lying header
    # zipfile's own CRC/size checks may stop it first; either way the bytes past the declared size never come out.
    with pytest.raises((ArchiveError, zipfile.BadZipFile)):
        b"".join(read_entry(archive, info))
