"""Incremental binary frame parser: bytes from a serial line in, checked frames and counted rejections out.

A sensor's byte stream can start mid-frame, lose a byte, or carry line noise. The
parser keeps only what may still become a frame, and after a rejected candidate it
moves on by one byte, not by a whole frame, so a valid frame hidden behind garbage is
never skipped. It never raises on input: every byte is accounted for in ``counters``
(``bytes_in = frame bytes + resync_bytes + pending``).

>>> p = FrameParser(headers=[b"\\x42\\x4d"], prefix_length=2, length_of=lambda prefix: 4,
...                 check=lambda f: None if f[3] == sum(f[:3]) % 256 else "bad_checksum")
>>> p.feed(b"\\x00\\x42\\x4d\\x01\\x90\\x42")
[Frame(offset=1, data=b'BM\\x01\\x90')]
>>> p.feed(b"\\x4d\\x01\\x00")
[Rejection(offset=5, reason='bad_checksum', data=b'BM\\x01\\x00')]
>>> dict(p.counters)
{'bytes_in': 9, 'resync_bytes': 5, 'frames_ok': 1, 'bad_checksum': 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame that passed its check; ``offset`` is its first byte's position in the stream."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A candidate frame that failed its check; ``reason`` is also the name of its counter."""

    offset: int
    reason: str
    data: bytes


class FrameParser:
    """Frames that start with one of ``headers`` and whose total length ``length_of(prefix)`` tells.

    ``length_of`` gets the first ``prefix_length`` bytes and returns the frame length, or
    None when the length field is not one the device sends (rejected as ``bad_length``,
    so a corrupt length never makes the parser wait for kilobytes). ``check`` returns
    None for a good frame or the reason it is bad.
    """

    def __init__(
        self,
        headers: Iterable[bytes],
        prefix_length: int,
        length_of: Callable[[bytes], int | None],
        check: Callable[[bytes], str | None],
    ):
        self.headers = tuple(headers)
        if not self.headers or len({h[:1] for h in self.headers}) != 1 or len({len(h) for h in self.headers}) != 1:
            raise ValueError("frame headers must be non-empty, of one length and share their first byte")
        self.header_length = len(self.headers[0])
        if prefix_length < self.header_length:
            raise ValueError("prefix_length must cover the header")
        self.prefix_length = prefix_length
        self.length_of = length_of
        self.check = check
        self._start = self.headers[0][0]
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self.counters: Counter[str] = Counter(bytes_in=0, resync_bytes=0, frames_ok=0)

    @property
    def pending(self) -> int:
        """Bytes held back because they may be the start of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | Rejection]:
        self.counters["bytes_in"] += len(data)
        self._buffer += data
        out: list[Frame | Rejection] = []
        buf, i = self._buffer, 0
        while True:
            j = buf.find(self._start, i)
            if j < 0:
                self._skip(len(buf) - i)
                i = len(buf)
                break
            self._skip(j - i)
            i = j
            head = bytes(buf[i : i + self.header_length])
            if len(head) < self.header_length:
                if any(h.startswith(head) for h in self.headers):
                    break  # may become a header with the next bytes
                self._skip(1)
                i += 1
                continue
            if head not in self.headers:
                self._skip(1)
                i += 1
                continue
            if len(buf) - i < self.prefix_length:
                break
            length = self.length_of(bytes(buf[i : i + self.prefix_length]))
            if length is None or length < self.prefix_length:
                out.append(self._reject(i, "bad_length", bytes(buf[i : i + self.prefix_length])))
                i += 1
                continue
            if len(buf) - i < length:
                break
            frame = bytes(buf[i : i + length])
            reason = self.check(frame)
            if reason is None:
                out.append(Frame(self._base + i, frame))
                self.counters["frames_ok"] += 1
                i += length
            else:
                out.append(self._reject(i, reason, frame))
                i += 1
        del buf[:i]
        self._base += i
        return out

    def _skip(self, n: int) -> None:
        self.counters["resync_bytes"] += n

    def _reject(self, i: int, reason: str, data: bytes) -> Rejection:
        # Only the first byte is dropped: the next frame may start inside this candidate.
        self.counters[reason] += 1
        self._skip(1)
        return Rejection(self._base + i, reason, data)
