"""The reader side of a log another process appends to (``footfall serve``'s
store process): it sees whole records only, in order, and owns the checkpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from footfall.intake.log import IntakeError, IntakeLocked, IntakeLog, IntakeReader

from .test_intake_log import fill, payload_for, segment_files


def test_reader_sees_appends_in_order_and_resumes_from_its_hint(tmp_path: Path) -> None:
    with IntakeLog(tmp_path, external_consumer=True) as log, IntakeReader(tmp_path) as reader:
        assert list(reader.read()) == []
        fill(log, 3)
        assert [(r.position, r.payload) for r in reader.read()] == [(i, payload_for(i)) for i in (1, 2, 3)]
        fill(log, 2)
        assert [r.position for r in reader.read(after=3)] == [4, 5]
        assert [r.position for r in reader.read(after=1, limit=2)] == [2, 3]


def test_a_record_still_being_written_is_not_read(tmp_path: Path) -> None:
    with IntakeLog(tmp_path, external_consumer=True) as log:
        fill(log, 2)
    segment = segment_files(tmp_path)[-1]
    whole = segment.read_bytes()
    with IntakeLog(tmp_path, external_consumer=True) as log:
        fill(log, 1)
    complete = segment.read_bytes()
    segment.write_bytes(complete[: len(whole) + 5])  # the third record half written
    with IntakeReader(tmp_path) as reader:
        assert [r.position for r in reader.read()] == [1, 2]
        segment.write_bytes(complete)  # the appender finishes it
        assert [r.position for r in reader.read(after=2)] == [3]


def test_checkpoint_is_shared_with_the_appender_and_truncate_spares_the_last_segment(tmp_path: Path) -> None:
    with IntakeLog(tmp_path, segment_bytes=200, external_consumer=True) as log, IntakeReader(tmp_path) as reader:
        fill(log, 12)
        assert len(segment_files(tmp_path)) >= 3
        last = [r.position for r in reader.read()][-1]
        assert last == 12
        reader.checkpoint(8)
        assert log.checkpointed == 8
        assert log.stats().lag == 4
        reader.truncate()
        firsts = [int(path.stem) for path in segment_files(tmp_path)]
        assert firsts[0] <= 9
        assert [r.position for r in reader.read(after=8)] == [9, 10, 11, 12]
        with pytest.raises(IntakeError, match="were deleted"):
            list(reader.read(after=0))
        with pytest.raises(IntakeError, match="cannot move backwards"):
            reader.checkpoint(7)
        reader.checkpoint(12)
        reader.truncate()
        assert len(segment_files(tmp_path)) == 1  # the appender's active segment stays


def test_wait_for_wakes_when_the_appender_writes(tmp_path: Path) -> None:
    with IntakeLog(tmp_path, external_consumer=True) as log, IntakeReader(tmp_path, poll_interval=0.005) as reader:
        assert reader.wait_for(0, timeout=0.05) is False
        timer = threading.Timer(0.05, lambda: fill(log, 1))
        timer.start()
        assert reader.wait_for(0, timeout=5) is True
        timer.join()


def test_one_reader_per_log(tmp_path: Path) -> None:
    with IntakeReader(tmp_path), pytest.raises(IntakeLocked, match="already has a reader"):
        IntakeReader(tmp_path)
