"""The native ring through its Python wrapper: order, wraparound, full ring, damage, threads,
processes and SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from janus_utils import _ring
from janus_utils._ring import Ring
from janus_utils._ring_cffi import ffi, lib
from janus_utils.error_handling.utils.errors import (
    RecordTooLargeError,
    RingError,
    RingFormatError,
)

SMALL = 4096
FORK = multiprocessing.get_context("fork")


def drain(ring: Ring, *, want: int, deadline: float = 30.0) -> list[tuple[int, bytes]]:
    """Read and release until *want* records arrived or the deadline passed."""
    got: list[tuple[int, bytes]] = []
    stop = time.monotonic() + deadline
    while len(got) < want and time.monotonic() < stop:
        batch, upto = ring.read()
        got.extend(batch)
        ring.release(upto)
        if not batch:
            time.sleep(0.001)
    return got


def tagged(producer: int, i: int, pad: int = 0) -> bytes:
    return f"{producer}:{i}:".encode() + b"x" * pad


def check_exactly_once(payloads: list[bytes], producers: int, per_producer: int) -> None:
    """Every producer's records arrived once each and in the order it pushed them."""
    seen: dict[int, list[int]] = {p: [] for p in range(producers)}
    for payload in payloads:
        p, i, _ = payload.split(b":", 2)
        seen[int(p)].append(int(i))
    for p in range(producers):
        assert list(range(per_producer)) == seen[p]


class TestBinding:
    def test_constants_match_header(self) -> None:
        """The cdef's constants agree with ring.h as compiled."""
        assert 1 == lib.JR_VERSION
        assert 4096 == lib.JR_HEADER_SIZE
        assert 16 == lib.JR_REC_HEADER
        assert (0, 1, 2) == (lib.JR_POLICY_BLOCK, lib.JR_POLICY_DROP, lib.JR_POLICY_TRY)

    def test_file_is_header_plus_capacity_and_private(self, tmp_path: Path) -> None:
        """A new ring file is 4096 + capacity bytes, mode 0600, starting with the magic."""
        path = tmp_path / "r.ring"
        with Ring(path, 65536):
            pass
        assert 4096 + 65536 == path.stat().st_size
        assert 0o600 == path.stat().st_mode & 0o777
        assert b"JANUSRNG" == path.read_bytes()[:8]


class TestOrderAndBatching:
    def test_records_come_back_in_push_order(self, tmp_path: Path) -> None:
        """Records are read in the order they were pushed, with growing sequence numbers."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            sent = [f"record {i}".encode() * (i % 5 + 1) for i in range(200)]
            for data in sent:
                assert ring.push(data)
            got, upto = ring.read()
            assert sent == [p for _, p in got]
            seqs = [s for s, _ in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            ring.release(upto)
            assert ([], upto) == ring.read()

    def test_read_honours_max_records(self, tmp_path: Path) -> None:
        """A read returns at most max_records; the next read continues after them."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            for i in range(10):
                ring.push(b"%d" % i)
            first, upto = ring.read(max_records=4)
            second, _ = ring.read()
            assert [b"0", b"1", b"2", b"3"] == [p for _, p in first]
            assert [b"%d" % i for i in range(4, 10)] == [p for _, p in second]
            assert second[0][0] == upto

    def test_empty_and_binary_payloads_survive(self, tmp_path: Path) -> None:
        """Empty records and every byte value round-trip unchanged."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            sent = [b"", bytes(range(256)), b"\0" * 17]
            for data in sent:
                ring.push(data)
            assert sent == [p for _, p in ring.read()[0]]

    def test_rewind_delivers_unreleased_records_again(self, tmp_path: Path) -> None:
        """After a failed store the consumer rewinds and reads the same records again."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            ring.push(b"a")
            ring.push(b"b")
            first, _ = ring.read()
            ring.rewind()
            again, _ = ring.read()
            assert first == again

    def test_release_rejects_a_position_outside_the_ring(self, tmp_path: Path) -> None:
        """Releasing past the head or off a record boundary is an error, not corruption."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            ring.push(b"a")
            with pytest.raises(RingError, match="record boundary"):
                ring.release(10**6)
            with pytest.raises(RingError):
                ring.release(8)


class TestWraparound:
    def test_many_laps_keep_every_record_intact(self, tmp_path: Path) -> None:
        """Varying record sizes wrap a small ring hundreds of times without a byte lost."""
        with Ring(tmp_path / "r.ring", SMALL, policy="drop") as ring:
            sizes = [0, 1, 7, 15, 16, 17, 100, 333, 1000, 2000 - 16]
            sent = got = 0
            for i in range(3000):
                data = struct.pack("<I", i) + bytes([i % 251]) * sizes[i % len(sizes)]
                while not ring.push(data):
                    batch, upto = ring.read()
                    for _, payload in batch:
                        n = struct.unpack_from("<I", payload)[0]
                        assert n == got
                        expected_size = 4 + sizes[n % len(sizes)]
                        assert payload == struct.pack("<I", n) + bytes([n % 251]) * (expected_size - 4)
                        got += 1
                    ring.release(upto)
                sent += 1
            batch, upto = ring.read()
            got += len(batch)
            ring.release(upto)
            stats = ring.stats()
            assert sent == got
            assert stats.head > 200 * SMALL  # really went round many times
            assert 0 == stats.torn


def _populates_writable() -> bool:
    """Linux 5.14 and later make a mapping's pages writable up front (MADV_POPULATE_WRITE)."""
    if platform.system() != "Linux":
        return False
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


class TestPages:
    @pytest.mark.skipif(not _populates_writable(), reason="needs Linux 5.14 (MADV_POPULATE_WRITE)")
    def test_a_fresh_rings_first_lap_takes_no_page_faults(self, tmp_path: Path) -> None:
        """The ring's pages are writable from open: no push waits for a write fault."""
        capacity = 4 << 20
        with Ring(tmp_path / "r.ring", capacity, policy="drop") as ring:
            data = b"x" * 200  # 224 bytes with its header and padding: ~18,700 pushes over 1,024 pages
            push = ring.push
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            pushed = sum(1 for _ in range(capacity // 224 - 64) if push(data))
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        assert capacity // 224 - 64 == pushed
        assert faults < 64


class TestFullRing:
    def test_drop_policy_refuses_at_once_and_counts(self, tmp_path: Path) -> None:
        """With policy 'drop' a full ring refuses the push and counts every drop."""
        with Ring(tmp_path / "r.ring", SMALL, policy="drop") as ring:
            pushed = 0
            while ring.push(b"y" * 100):
                pushed += 1
            for _ in range(4):
                assert not ring.push(b"y" * 100)
            assert 5 == ring.stats().dropped
            assert pushed * 128 <= SMALL
            _, upto = ring.read()
            ring.release(upto)
            assert ring.push(b"y" * 100)

    def test_try_policy_refuses_at_once_without_counting(self, tmp_path: Path) -> None:
        """JR_POLICY_TRY (the C encoder's push) never waits and counts no drop: the
        caller pushes again through the ring's own policy, which counts."""
        with Ring(tmp_path / "r.ring", SMALL, policy="block") as ring:
            ptr, data = ring.native()[0], b"t" * 100
            handle = ffi.cast("jr_ring *", ptr)
            while lib.jr_push_ex(handle, data, len(data), lib.JR_POLICY_TRY, 0) == lib.JR_OK:
                pass
            for _ in range(3):
                assert lib.JR_FULL == lib.jr_push_ex(handle, data, len(data), lib.JR_POLICY_TRY, 0)
            assert 0 == ring.stats().dropped
            _, upto = ring.read()
            ring.release(upto)
            assert lib.JR_OK == lib.jr_push_ex(handle, data, len(data), lib.JR_POLICY_TRY, 0)

    def test_block_policy_times_out_and_counts(self, tmp_path: Path) -> None:
        """With policy 'block' and a timeout, a push into a full ring gives up and counts."""
        with Ring(tmp_path / "r.ring", SMALL, policy="block", block_timeout=0.05) as ring:
            while ring.push_wait(b"z" * 100, 0):
                pass
            assert not ring.push(b"z" * 100)
            assert 2 == ring.stats().dropped

    def test_block_policy_waits_for_the_consumer(self, tmp_path: Path) -> None:
        """A blocked producer resumes once a consumer frees space; nothing is dropped."""
        with Ring(tmp_path / "r.ring", SMALL, policy="block") as ring:
            while ring.push_wait(b"f" * 100, 0):
                pass
            dropped_before = ring.stats().dropped
            done = threading.Event()

            def producer() -> None:
                for i in range(500):
                    ring.push(b"%d" % i)
                done.set()

            t = threading.Thread(target=producer)
            t.start()
            got = []
            while not done.is_set() or got[-1:] != [b"499"]:
                batch, upto = ring.read()
                got.extend(p for p, in [(p,) for _, p in batch] if not p.startswith(b"f"))
                ring.release(upto)
            t.join()
            assert [b"%d" % i for i in range(500)] == got
            assert dropped_before == ring.stats().dropped

    def test_a_producer_waiting_for_room_lets_other_threads_run(self, tmp_path: Path) -> None:
        """A push waiting on a full ring holds no GIL: another thread runs meanwhile, and a release lets the push through."""
        with Ring(tmp_path / "r.ring", SMALL, policy="block") as ring:
            while ring.push_wait(b"f" * 100, 0):
                pass
            before = ring.stats()
            result: list[bool] = []
            late = b"l" * 100
            # A bounded wait: were the GIL held through it, this thread's loop
            # below could only run once the push had given up.
            waiter = threading.Thread(target=lambda: result.append(ring.push_wait(late, 5.0)))
            waiter.start()
            time.sleep(0.05)
            spins = 0
            for _ in range(200_000):
                spins += 1
            still_waiting = waiter.is_alive()
            batch, upto = ring.read()
            ring.release(upto)
            waiter.join(30)
            assert (200_000, True) == (spins, still_waiting)
            assert [True] == result
            assert [late] == [p for _, p in ring.read()[0]]
            after = ring.stats()
            assert 1 == after.full_waits - before.full_waits
            assert after.full_wait_ns > before.full_wait_ns
            assert after.full_wait_max_ns >= after.full_wait_ns - before.full_wait_ns
            assert before.dropped == after.dropped

    def test_a_wait_that_times_out_is_counted_as_a_wait_and_a_drop(self, tmp_path: Path) -> None:
        """A push that waited its whole timeout for room counts one wait and one drop."""
        with Ring(tmp_path / "r.ring", SMALL, policy="block") as ring:
            while ring.push_wait(b"z" * 100, 0):
                pass
            before = ring.stats()
            assert not ring.push_wait(b"z" * 100, 0.02)
            after = ring.stats()
            assert (1, 1) == (after.full_waits - before.full_waits, after.dropped - before.dropped)
            assert after.full_wait_ns - before.full_wait_ns >= 20_000_000

    def test_a_producer_in_another_process_is_woken_by_a_release(self, tmp_path: Path) -> None:
        """A process waiting on a full ring gets its record in once another process releases room."""
        path = str(tmp_path / "r.ring")
        with Ring(path, SMALL, policy="block") as ring:
            while ring.push_wait(b"f" * 100, 0):
                pass
            child = FORK.Process(target=_push_one_waiting, args=(path, b"c" * 100, 30.0))
            child.start()
            # Released once the child is in its wait, or before it pushes at
            # all: either way its push must go through.
            deadline = time.monotonic() + 10
            while not _waiting_for_room(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            ring.release(ring.read()[1])
            child.join(60)
            assert 0 == child.exitcode
            assert [b"c" * 100] == [p for _, p in ring.read()[0]]

    def test_a_producer_killed_while_waiting_for_room_leaves_the_ring_working(self, tmp_path: Path) -> None:
        """SIGKILL of a process asleep on a full ring: releases and pushes go on, nothing is lost."""
        path = str(tmp_path / "r.ring")
        with Ring(path, SMALL, policy="block") as ring:
            pushed = 0
            while ring.push_wait(tagged(0, pushed, pad=90), 0):
                pushed += 1
            child = FORK.Process(target=_push_one_waiting, args=(path, b"n" * 100, 60.0))
            child.start()
            deadline = time.monotonic() + 10
            while not _waiting_for_room(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _waiting_for_room(path)
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            got = drain(ring, want=pushed)
            for i in range(pushed, pushed + 200):  # several laps of the small ring
                assert ring.push_wait(tagged(0, i, pad=90), 5.0)
                got.extend(drain(ring, want=1))
            check_exactly_once([p for _, p in got], 1, pushed + 200)

    def test_high_water_mark_tracks_the_peak(self, tmp_path: Path) -> None:
        """The high-water counter keeps the most bytes ever in use."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            for _ in range(10):
                ring.push(b"h" * 84)  # 100 bytes with header: 112 aligned
            _, upto = ring.read()
            ring.release(upto)
            ring.push(b"h")
            assert 10 * 112 == ring.stats().high_water


class TestOversize:
    def test_record_larger_than_ring_is_refused_clearly(self, tmp_path: Path) -> None:
        """A record that can never fit raises RecordTooLargeError naming the limit."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            with pytest.raises(RecordTooLargeError, match=str(ring.max_record)):
                ring.push(b"x" * (ring.max_record + 1))
            assert 0 == ring.stats().head

    def test_largest_record_fits_an_empty_ring_at_any_offset(self, tmp_path: Path) -> None:
        """max_record bytes fit whatever the offset of the head, even after wrapping."""
        with Ring(tmp_path / "r.ring", SMALL, policy="drop") as ring:
            for shift in range(0, ring.max_record, 48):
                ring.push(b"s" * shift)
                ring.release(ring.read()[1])  # empty again, head moved by `shift`
                assert ring.push(b"L" * ring.max_record)
                got, upto = ring.read()
                assert b"L" * ring.max_record == got[-1][1]
                ring.release(upto)


class TestDamagedFiles:
    def test_other_file_is_not_a_ring(self, tmp_path: Path) -> None:
        """A file of another format gives RingFormatError, not a crash."""
        path = tmp_path / "r.ring"
        path.write_bytes(b"SQLite format 3\0" + b"\0" * (4096 + SMALL - 16))
        with pytest.raises(RingFormatError, match="not a janus ring"):
            Ring(path, None)

    def test_empty_file_is_not_a_ring(self, tmp_path: Path) -> None:
        """An empty file at the path is refused with a clear error."""
        path = tmp_path / "r.ring"
        path.touch()
        with pytest.raises(RingFormatError):
            Ring(path, SMALL)

    def test_flipped_header_byte_is_corrupt(self, tmp_path: Path) -> None:
        """A changed capacity field fails the header checksum."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        raw = bytearray(path.read_bytes())
        raw[17] ^= 0x01  # inside the capacity field
        path.write_bytes(bytes(raw))
        with pytest.raises(RingFormatError, match="damaged"):
            Ring(path, None)

    def test_other_version_is_refused(self, tmp_path: Path) -> None:
        """A ring of another format version is refused, saying so."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        raw = bytearray(path.read_bytes())
        raw[8:12] = struct.pack("<I", 99)
        path.write_bytes(bytes(raw))
        with pytest.raises(RingFormatError, match="another format version"):
            Ring(path, None)

    def test_truncated_file_is_refused(self, tmp_path: Path) -> None:
        """A file shorter than its header says is refused before it is mapped."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        os.truncate(path, 4096 + SMALL // 2)
        with pytest.raises(RingFormatError, match="size"):
            Ring(path, None)

    def test_damaged_cursors_are_refused(self, tmp_path: Path) -> None:
        """A tail beyond the head is reported as damage."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        raw = bytearray(path.read_bytes())
        raw[128:136] = struct.pack("<Q", 4096)  # the tail
        path.write_bytes(bytes(raw))
        with pytest.raises(RingFormatError, match="damaged"):
            Ring(path, None)

    def test_file_others_can_read_is_refused(self, tmp_path: Path) -> None:
        """A ring readable by group or others is refused: records could leak or be forged."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        path.chmod(0o644)
        with pytest.raises(RingFormatError, match="0600"):
            Ring(path, None)

    def test_symlink_at_the_path_is_refused(self, tmp_path: Path) -> None:
        """A symlink planted where the ring should be is not followed."""
        target = tmp_path / "elsewhere.ring"
        Ring(target, SMALL).close()
        link = tmp_path / "r.ring"
        link.symlink_to(target)
        with pytest.raises(RingError):
            Ring(link, None)

    def test_hostile_cursors_stop_the_consumer_safely(self, tmp_path: Path) -> None:
        """A head moved far past the tail after open gives RingFormatError, not a wild write."""
        path = tmp_path / "r.ring"
        with Ring(path, SMALL) as ring:
            ring.push(b"ok")
            with open(path, "r+b") as f:  # another writer damages the shared header
                f.seek(64)
                f.write(struct.pack("<Q", 4 * SMALL))
            with pytest.raises(RingFormatError, match="damaged"):
                ring.read()
            with pytest.raises(RingFormatError, match="damaged"):
                ring.release(16)

    def test_capacity_mismatch_is_explained(self, tmp_path: Path) -> None:
        """Asking for another capacity than the file has says how to proceed."""
        path = tmp_path / "r.ring"
        Ring(path, SMALL).close()
        with pytest.raises(RingFormatError, match="capacity=None"):
            Ring(path, SMALL * 2)
        with Ring(path, None) as ring:
            assert SMALL == ring.stats().capacity

    def test_bad_arguments_are_refused(self, tmp_path: Path) -> None:
        """Capacities that are not powers of two and unknown policies are ValueErrors."""
        with pytest.raises(ValueError, match="power of two"):
            Ring(tmp_path / "r.ring", 5000)
        with pytest.raises(ValueError, match="policy"):
            Ring(tmp_path / "r.ring", SMALL, policy="spin")  # type: ignore[arg-type]

    def test_missing_file_without_create(self, tmp_path: Path) -> None:
        """Opening a missing ring without create names the OS error."""
        with pytest.raises(RingError, match="No such file"):
            Ring(tmp_path / "absent.ring", SMALL, create=False)


class TestReopen:
    def test_reopen_after_writer_closed(self, tmp_path: Path) -> None:
        """Records pushed by a closed handle are read by the next one to open the file."""
        path = tmp_path / "r.ring"
        with Ring(path, 65536) as writer:
            for i in range(50):
                writer.push(b"w%d" % i)
        with Ring(path, None) as reader:
            assert [b"w%d" % i for i in range(50)] == [p for _, p in reader.read()[0]]

    def test_unreleased_records_are_delivered_to_the_next_consumer(self, tmp_path: Path) -> None:
        """A consumer that read but did not release leaves the records to its successor."""
        path = tmp_path / "r.ring"
        with Ring(path, 65536) as first:
            first.push(b"a")
            first.push(b"b")
            batch, _ = first.read()
            first.release(batch[1][0])  # "a" stored, "b" not yet
        with Ring(path, None) as second:
            assert [b"b"] == [p for _, p in second.read()[0]]


class TestConsumerWait:
    """wait_consumer(): how a flusher waits for its next commit without the GIL."""

    def test_an_idle_ring_waits_out_the_timeout(self, tmp_path: Path) -> None:
        """Nothing logged and nobody waking it: the wait ends by its timeout."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            assert _ring.WAIT_TIMEOUT == ring.wait_consumer(1, 0.02)

    def test_a_wake_before_the_wait_ends_it_once(self, tmp_path: Path) -> None:
        """A wake is kept until a wait takes it, and taken once."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            ring.wake_consumer()
            ring.wake_consumer()
            assert _ring.WAIT_WOKEN == ring.wait_consumer(1, 60)
            assert _ring.WAIT_TIMEOUT == ring.wait_consumer(1, 0.02)

    def test_a_wake_from_another_thread_ends_a_long_wait(self, tmp_path: Path) -> None:
        """The waiting thread holds no GIL: another runs Python meanwhile and wakes it."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            ran = threading.Event()

            def waker() -> None:
                ran.set()  # Python code, while the waiter is inside the wait
                ring.wake_consumer()

            timer = threading.Timer(0.05, waker)
            timer.start()
            try:
                assert _ring.WAIT_WOKEN == ring.wait_consumer(1, 60)
            finally:
                timer.join()
            assert ran.is_set()

    def test_a_wake_from_another_process_ends_a_long_wait(self, tmp_path: Path) -> None:
        """The wake word is in the ring's header: flush() in another process wakes this consumer."""
        path = tmp_path / "r.ring"
        with Ring(path, SMALL) as ring:
            child = subprocess.Popen(
                [sys.executable, "-c", _WAKE_FROM_CHILD, str(path)], stderr=subprocess.PIPE, text=True
            )
            try:
                assert _ring.WAIT_WOKEN == ring.wait_consumer(1, 60)
            finally:
                _, err = child.communicate(timeout=60)
            assert 0 == child.returncode, err
            assert _ring.WAIT_TIMEOUT == ring.wait_consumer(1, 0.02)  # that wake was taken once

    def test_waking_a_closed_ring_does_nothing(self, tmp_path: Path) -> None:
        """flush() or stop() may wake the flusher after its ring is closed: no crash."""
        ring = Ring(tmp_path / "r.ring", SMALL)
        ring.close()
        ring.wake_consumer()

    def test_a_filled_ring_ends_the_wait(self, tmp_path: Path) -> None:
        """Records of min_used bytes or more in the ring end the wait, already there or pushed meanwhile."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            assert ring.push(b"x" * 100)
            assert _ring.WAIT_FILLED == ring.wait_consumer(100, 60)
            assert _ring.WAIT_TIMEOUT == ring.wait_consumer(1000, 0.02)
            timer = threading.Timer(0.05, lambda: [ring.push(b"y" * 100) for _ in range(10)])
            timer.start()
            try:
                assert _ring.WAIT_FILLED == ring.wait_consumer(1000, 60)
            finally:
                timer.join()


_WAKE_FROM_CHILD = """
import sys, time
from janus_utils._ring import Ring
with Ring(sys.argv[1], None) as ring:
    time.sleep(0.2)
    ring.wake_consumer()
"""


class TestTailWait:
    """wait_tail(): how flush() waits for the consumer to release what it logged."""

    def test_a_release_that_passes_the_target_ends_the_wait(self, tmp_path: Path) -> None:
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            for i in range(3):
                assert ring.push(b"r%d" % i)
            target = ring.stats().head
            assert not ring.wait_tail(target, 0.02)  # nothing released: the timeout ends it

            def consume() -> None:
                batch, _ = ring.read()
                ring.release(batch[1][0])  # not yet the target: the wait goes on
                time.sleep(0.05)
                ring.release(ring.stats().head)

            timer = threading.Timer(0.05, consume)
            timer.start()
            try:
                assert ring.wait_tail(target, 60)
            finally:
                timer.join()
            assert ring.stats().tail >= target
            assert ring.wait_tail(target, 0)  # already there: at once, whatever the timeout


class TestPrefilter:
    TOKENS = ("password", "token", "bearer", "eyj")

    def test_tokens_digits_and_url_credentials_are_suspect(self, tmp_path: Path) -> None:
        """Token (any case), 13+ digit runs and user:pass@ URLs are suspect; clean text is not."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            ring.set_prefilter(self.TOKENS)
            assert ring.suspect(b"my PassWord is")
            assert ring.suspect(b"Authorization: BEARER abc")
            assert ring.suspect(b"card 4111 1111 1111 1111 ok")
            assert ring.suspect(b"postgres://bob:pw@db/x")
            assert not ring.suspect(b"user 42 logged in from 10.0.0.1")
            assert not ring.suspect(b"order 123456789012 shipped")
            assert not ring.suspect(b"https://example.com/x then user@example.com")

    def test_checked_push_pushes_nothing_when_suspect(self, tmp_path: Path) -> None:
        """push_checked returns SUSPECT and leaves the ring untouched for suspect bytes."""
        with Ring(tmp_path / "r.ring", SMALL) as ring:
            ring.set_prefilter(self.TOKENS)
            push = ring.checked_pusher()
            assert _ring.SUSPECT == push(b"token=abc")
            assert _ring.OK == push(b"hello")
            assert [b"hello"] == [p for _, p in ring.read()[0]]


# --- threads and processes -------------------------------------------------

PER_PRODUCER = 20_000


def _process_producer(path: str, producer: int, count: int) -> None:
    ring = Ring(path, None)
    for i in range(count):
        if not ring.push(tagged(producer, i, pad=i % 40)):
            raise SystemExit(3)
    ring.close()


def _push_one_waiting(path: str, payload: bytes, timeout: float) -> None:
    ring = Ring(path, None)
    ok = ring.push_wait(payload, timeout)
    ring.close()
    raise SystemExit(0 if ok else 3)


def _waiting_for_room(path: str) -> bool:
    """Whether a producer counts itself asleep on *path*'s full ring (the header's room_waiters)."""
    with open(path, "rb") as f:
        header = f.read(lib.JR_HEADER_SIZE)
    # struct jr_shared: five 64-byte lines, then room_seq (u32), room_waiters (u32).
    (waiters,) = struct.unpack_from("<I", header, 5 * 64 + 4)
    return waiters > 0


class TestConcurrency:
    def test_four_threads_every_record_exactly_once_in_order(self, tmp_path: Path) -> None:
        """4 producer threads through a small ring: each record once, in each producer's order."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            threads = [
                threading.Thread(
                    target=lambda p=p: [ring.push(tagged(p, i, pad=i % 40)) for i in range(PER_PRODUCER)]
                )
                for p in range(4)
            ]
            for t in threads:
                t.start()
            got = drain(ring, want=4 * PER_PRODUCER)
            for t in threads:
                t.join()
            assert 4 * PER_PRODUCER == len(got)
            check_exactly_once([p for _, p in got], 4, PER_PRODUCER)
            assert (0, 0) == (ring.stats().dropped, ring.stats().torn)

    def test_four_processes_every_record_exactly_once_in_order(self, tmp_path: Path) -> None:
        """4 producer processes through one ring file: each record once, in order."""
        path = str(tmp_path / "r.ring")
        with Ring(path, 65536) as ring:
            procs = [FORK.Process(target=_process_producer, args=(path, p, PER_PRODUCER)) for p in range(4)]
            for p in procs:
                p.start()
            got = drain(ring, want=4 * PER_PRODUCER, deadline=60)
            for p in procs:
                p.join()
            assert [0, 0, 0, 0] == [p.exitcode for p in procs]
            assert 4 * PER_PRODUCER == len(got)
            check_exactly_once([p for _, p in got], 4, PER_PRODUCER)

    def test_forked_child_keeps_using_the_parents_ring(self, tmp_path: Path) -> None:
        """After fork() the child pushes through the inherited handle into the same ring."""
        with Ring(tmp_path / "r.ring", 65536) as ring:
            ring.push(b"parent")
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                ok = ring.push(b"child")
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert 0 == os.waitstatus_to_exitcode(status)
            assert [b"parent", b"child"] == [p for _, p in ring.read()[0]]


# --- SIGKILL ---------------------------------------------------------------


def _push_forever(path: str, progress: multiprocessing.sharedctypes.Synchronized) -> None:  # type: ignore[name-defined]
    ring = Ring(path, None, policy="block")
    i = 0
    while True:
        ring.push(tagged(0, i, pad=i % 60))
        progress.value = i  # only after the push returned
        i += 1


def _reserve_then_die(path: str, write_header: bool) -> None:
    ring = Ring(path, None)
    ring.push(b"before")
    ring._debug_reserve_only(50, write_header=write_header)
    os.kill(os.getpid(), signal.SIGKILL)


def _reserve_then_wait(path: str, reserved: Any, go: Any) -> None:
    ring = Ring(path, None)
    ring._debug_reserve_only(50)
    reserved.set()
    go.wait(60)  # alive, but never commits: a stopped or starved producer


class TestKill:
    def test_live_producer_is_waited_for_not_skipped(self, tmp_path: Path) -> None:
        """An uncommitted record of a producer that is alive is never skipped; once it dies, it is."""
        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        reserved, go = FORK.Event(), FORK.Event()
        child = FORK.Process(target=_reserve_then_wait, args=(path, reserved, go))
        child.start()
        assert reserved.wait(30)
        with Ring(path, None, torn_timeout=0.01) as ring:
            ring.push(b"after")
            for _ in range(20):  # well past the torn timeout, again and again
                assert ([], 0) == ring.read()
                time.sleep(0.005)
            assert 0 == ring.stats().torn
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            got = drain(ring, want=1)
            assert [b"after"] == [p for _, p in got]
            assert 1 == ring.stats().torn


    def test_sigkill_loses_no_record_whose_push_returned(self, tmp_path: Path) -> None:
        """A producer SIGKILLed mid-stream: the next consumer gets every returned push, once."""
        path = str(tmp_path / "r.ring")
        Ring(path, 1 << 22).close()
        progress = FORK.Value("q", -1, lock=False)
        child = FORK.Process(target=_push_forever, args=(path, progress))
        child.start()
        while progress.value < 20_000:
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert -signal.SIGKILL == child.exitcode
        returned = progress.value
        with Ring(path, None, torn_timeout=0.05) as ring:
            got = drain(ring, want=returned + 1)
            time.sleep(0.1)
            got += drain(ring, want=1, deadline=0.3)  # a last push may have completed too
        numbers = [int(p.split(b":")[1]) for _, p in got]
        assert list(range(len(numbers))) == numbers
        assert len(numbers) in (returned + 1, returned + 2)

    @pytest.mark.parametrize("write_header", [True, False], ids=["after-header", "before-header"])
    def test_sigkill_between_reserve_and_commit_costs_one_record(
        self, tmp_path: Path, write_header: bool
    ) -> None:
        """A producer killed holding a reservation: that record is skipped and counted, the rest flow."""
        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        child = FORK.Process(target=_reserve_then_die, args=(path, write_header))
        child.start()
        child.join()
        assert -signal.SIGKILL == child.exitcode
        with Ring(path, None, torn_timeout=0.05) as ring:
            for i in range(3):
                ring.push(b"after %d" % i)
            got = drain(ring, want=4)
            assert [b"before", b"after 0", b"after 1", b"after 2"] == [p for _, p in got]
            assert 80 == ring.stats().torn_bytes  # the 50-byte record, its header and padding
            if write_header:
                assert 1 == ring.stats().torn  # the header said it was one record
            else:
                # No header: estimated from the bytes and the 32-byte record read before.
                assert 3 == ring.stats().torn


def _push_numbered(ring: Ring, count: int, size: int) -> None:
    for i in range(count):
        ring.push(b"%08d" % i + b"." * (size - 8))


class TestDamageIsCounted:
    """Records lost to damage are counted as records (estimated) and bytes (exact), not as one."""

    @pytest.mark.parametrize("first", [1000, 0], ids=["in-the-middle", "before-anything-read"])
    def test_a_damaged_stretch_counts_the_records_it_held(self, tmp_path: Path, first: int) -> None:
        """1,000 records zeroed in the file: 1,000 counted lost, the 2,000 others read once each."""
        path = tmp_path / "r.ring"
        size = 48  # + 16-byte header = 64 bytes a record
        with Ring(path, 1 << 20, torn_timeout=0.01) as ring:
            _push_numbered(ring, 3000, size)
            with open(path, "r+b") as f:  # zero 1,000 records, headers and all
                f.seek(_ring.HEADER_SIZE + first * 64)
                f.write(bytes(1000 * 64))
            got = drain(ring, want=2000)
            kept = [i for i in range(3000) if not first <= i < first + 1000]
            assert [b"%08d" % i for i in kept] == [p[:8] for _, p in got]
            assert (1000, 64_000) == (ring.stats().torn, ring.stats().torn_bytes)


# --- who is alive: zombies, PID namespaces, fork -----------------------------


def _reserve_and_exit_unreaped(path: str, *, by_pid: bool) -> int:
    """Fork a producer that reserves a record and exits; it stays a zombie (not reaped)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ring = Ring(path, None)
        ring.push(b"before")
        ring._debug_reserve_only(50, by_pid=by_pid)
        os._exit(0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return pid
        time.sleep(0.01)
    raise AssertionError("the child did not become a zombie")


class TestLiveness:
    @pytest.mark.parametrize("by_pid", [False, True], ids=["slot", "pid"])
    def test_a_zombie_producer_that_died_mid_push_does_not_stall(
        self, tmp_path: Path, by_pid: bool
    ) -> None:
        """kill(pid, 0) succeeds on a zombie; its record is skipped all the same."""
        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        pid = _reserve_and_exit_unreaped(path, by_pid=by_pid)
        try:
            with Ring(path, None, torn_timeout=0.05) as ring:
                ring.push(b"after")
                got = drain(ring, want=2, deadline=10)
                assert [b"before", b"after"] == [p for _, p in got]
                assert 1 == ring.stats().torn
        finally:
            os.waitpid(pid, 0)

    @pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"), reason="needs root and unshare")
    def test_a_producer_in_another_pid_namespace_is_judged_by_its_lock(self, tmp_path: Path) -> None:
        """Its pid (1 in its namespace) means nothing here: alive it is waited for, dead it is skipped."""
        import subprocess
        import sys

        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        script = (
            "import sys, time\n"
            "from janus_utils._ring import Ring\n"
            "ring = Ring(sys.argv[1], None)\n"
            "ring._debug_reserve_only(50)\n"
            "print('reserved', flush=True)\n"
            "time.sleep(600)\n"
        )
        child = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", script, path],
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert b"reserved\n" == child.stdout.readline()
            with Ring(path, None, torn_timeout=0.01) as ring:
                ring.push(b"after")
                for _ in range(20):  # well past the torn timeout: still waited for
                    assert ([], 0) == ring.read()
                    time.sleep(0.005)
                assert 0 == ring.stats().torn
                child.kill()  # unshare; --kill-child takes the producer with it
                child.wait()
                got = drain(ring, want=1, deadline=10)
                assert [b"after"] == [p for _, p in got]
                assert 1 == ring.stats().torn
        finally:
            child.kill()
            child.wait()

    def test_a_parent_dead_mid_push_is_not_kept_alive_by_its_child(self, tmp_path: Path) -> None:
        """A forked child takes its own slot: the parent's record is skipped once the parent is gone."""
        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        r, w = os.pipe()
        parent = os.fork()
        if parent == 0:  # pragma: no cover - the producer, which forks a long-lived child
            ring = Ring(path, None)
            if os.fork() == 0:
                os.close(w)
                os.read(r, 1)  # lives until the test closes the pipe
                os._exit(0)
            ring._debug_reserve_only(50)
            os._exit(0)
        os.close(r)
        try:
            os.waitpid(parent, 0)
            with Ring(path, None, torn_timeout=0.05) as ring:
                ring.push(b"after")
                got = drain(ring, want=1, deadline=10)
                assert [b"after"] == [p for _, p in got]
                assert 1 == ring.stats().torn
        finally:
            os.close(w)


class TestTwoConsumers:
    def test_a_consumer_released_past_is_superseded_not_corrupt(self, tmp_path: Path) -> None:
        """The second consumer's read and release say so; the ring is not called damaged."""
        path = str(tmp_path / "r.ring")
        with Ring(path, 65536) as a, Ring(path, None) as b:
            for i in range(4):
                a.push(b"%d" % i)
            batch_a, upto_a = a.read()
            batch_b, upto_b = b.read(2)
            assert batch_a[:2] == batch_b
            a.release(upto_a)
            with pytest.raises(_ring.Superseded):
                b.release(upto_b)  # behind the tail now
            a.push(b"4")
            with pytest.raises(_ring.Superseded):
                b.read()
            b.rewind()
            assert [b"4"] == [p for _, p in b.read()[0]]
            assert 0 == a.stats().torn

    def test_release_is_refused_while_another_consumer_releases(self, tmp_path: Path) -> None:
        """A consumer stopped inside jr_release keeps others from zeroing under it."""
        import fcntl
        import struct as _struct

        path = str(tmp_path / "r.ring")
        with Ring(path, 65536) as ring:
            ring.push(b"x")
            _, upto = ring.read()
            fd = os.open(path, os.O_RDWR)  # another open file description: another consumer
            try:
                lock = _struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, (1 << 41) - 1, 1, 0)
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
                with pytest.raises(_ring.Superseded):
                    ring.release(upto)
                assert 0 == ring.stats().tail
            finally:
                os.close(fd)  # as if it resumed and finished
            ring.release(upto)
            assert upto == ring.stats().tail


class TestElection:
    def test_claim_beat_and_resign(self, tmp_path: Path) -> None:
        """One token at a time; a superseded consumer's beat says so."""
        path = str(tmp_path / "r.ring")
        with Ring(path, 65536) as a, Ring(path, None) as b:
            assert (0, 0) == (a.stats().leader, a.stats().beat)
            assert a.claim(11, expected=0)
            assert not b.claim(22, expected=0)  # someone got there first
            assert a.beat(11)
            beat = b.stats().beat
            assert b.claim(22, expected=11)  # a takeover of a stale 11
            assert b.stats().beat > beat
            assert not a.beat(11)
            assert 22 == a.stats().leader
            assert b.claim(0, expected=22)  # resign
            assert 0 == a.stats().leader


def _claim_then_wait(path: str, reserved: Any, go: Any) -> None:
    ring = Ring(path, None)
    ring._debug_reserve_only(50, claim_only=True)
    reserved.set()
    go.wait(60)


class TestStalledBeforeFirstWrite:
    def test_a_reservation_left_unclaimed_is_taken_back_and_pushed_again(self, tmp_path: Path) -> None:
        """A producer stalled between reserving and writing past the torn timeout, while the ring
        laps under it: its late write lands nowhere it could damage, and its record is kept."""
        path = str(tmp_path / "r.ring")
        with Ring(path, SMALL, policy="drop", torn_timeout=0.02) as ring:
            stalled = threading.Thread(target=_ring.debug_push_stalled, args=(ring, b"late", 0.5))
            stalled.start()
            while ring.stats().head == 0:  # it has reserved
                time.sleep(0.001)
            got: list[bytes] = []
            i = 0
            while stalled.is_alive() or i < 3000:
                if ring.push(b"after-%d" % i):
                    i += 1
                batch, upto = ring.read()
                got.extend(p for _, p in batch)
                ring.release(upto)
            stalled.join()
            got += [p for _, p in drain(ring, want=i + 1 - len(got), deadline=10)]
            laps = ring.stats().head // SMALL
            torn = ring.stats().torn
        assert [b"late"] == [p for p in got if not p.startswith(b"after-")]
        assert [b"after-%d" % n for n in range(i)] == [p for p in got if p.startswith(b"after-")]
        assert laps > 2  # the space it had reserved was reused while it slept
        assert torn >= 1  # its first reservation, taken back

    def test_a_claimed_record_of_a_live_producer_is_waited_for(self, tmp_path: Path) -> None:
        """Claimed, length not yet written: its owner lives, so it is waited for; dead, skipped."""
        path = str(tmp_path / "r.ring")
        Ring(path, 65536).close()
        reserved, go = FORK.Event(), FORK.Event()
        child = FORK.Process(target=_claim_then_wait, args=(path, reserved, go))
        child.start()
        assert reserved.wait(30)
        with Ring(path, None, torn_timeout=0.01) as ring:
            ring.push(b"after")
            for _ in range(20):
                assert ([], 0) == ring.read()
                time.sleep(0.005)
            assert 0 == ring.stats().torn
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            got = drain(ring, want=1)
            assert [b"after"] == [p for _, p in got]
            assert 80 == ring.stats().torn_bytes  # its 50-byte record, header and padding
            assert ring.stats().torn >= 1  # no length written: the count is an estimate

    def test_released_space_holds_no_byte_of_the_last_lap(self, tmp_path: Path) -> None:
        """Each released 16-byte unit is rewritten as a free header: payloads do not linger."""
        path = str(tmp_path / "r.ring")
        with Ring(path, SMALL) as ring:
            secret = b"s3cr3t-" * 20
            ring.push(secret)
            ring.release(ring.read()[1])
        assert b"s3cr3t" not in Path(path).read_bytes()
