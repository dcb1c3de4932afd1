"""Nothing acknowledged is lost, nothing is stored twice: SIGKILL the server at
random moments while clients send and retry, as SDKs do."""

from __future__ import annotations

from pathlib import Path

from .crash import run_crash_test


def test_sigkill_while_sending_loses_and_doubles_nothing(tmp_path: Path) -> None:
    report = run_crash_test(tmp_path / "data", batches=300, batch_size=25, kills=4)
    assert report.kills >= 2, "sending ended before the kills: too little was tested"
    assert report.acknowledged == report.batches
    assert report.failed_attempts > 0, "no request hit a dead server"
    assert report.missing == []
    assert report.stored_events == report.distinct_stored == report.events
