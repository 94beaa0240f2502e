"""The upload progress line: only on a terminal, only once an upload takes more than a moment."""

from __future__ import annotations

import io

from ame.packaging import PushProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_slow_upload_on_a_terminal_shows_progress() -> None:
    out = Terminal()
    progress = PushProgress(total_files=2, total_bytes=2048, stream=out, delay=0.0)
    progress.advance(1024, file_done=True)
    progress.close()
    assert "1/2 files, 1.0 KiB of 2.0 KiB" in out.getvalue()
    assert out.getvalue().endswith("\n")


def test_nothing_is_shown_before_the_delay_or_off_a_terminal() -> None:
    quick = Terminal()
    progress = PushProgress(total_files=1, total_bytes=10, stream=quick, delay=3600)
    progress.advance(10, file_done=True)
    progress.close()
    piped = io.StringIO()
    progress = PushProgress(total_files=1, total_bytes=10, stream=piped, delay=0.0)
    progress.advance(10, file_done=True)
    progress.close()
    assert (quick.getvalue(), piped.getvalue()) == ("", "")
