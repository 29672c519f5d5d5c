"""Frames: one libsodium secret stream per direction, sans-IO.

After the handshake each direction is one ``secretstream_xchacha20poly1305`` stream (its
key and random 24-byte header come from the handshake). A frame on the wire is::

    length(4, big-endian) ‖ ciphertext(length)      ciphertext = payload + 17 bytes

with the 4-byte length as associated data. The stream state advances with every frame, so
a tampered, dropped, reordered, duplicated or truncated frame fails authentication. A
declared length over ``max_frame + 17`` (``max_frame`` bounds the payload) is refused as
soon as the four length bytes arrive, before any of the body is buffered. A local close
sends a last frame tagged ``FINAL`` carrying a short reason, so the peer can tell a
deliberate close from a cut connection.
"""

from __future__ import annotations

from typing import Any

import nacl.bindings as _sodium
import nacl.exceptions

from bfs_smr._errors import LocalError

from ._errors import TransportError
from ._primitives import _ABYTES

_TAG_MESSAGE: int = _sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: int = _sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_CLOSE_REASON_MAX = 200  # bytes of a close reason sent to the peer

_push = _sodium.crypto_secretstream_xchacha20poly1305_push
_pull = _sodium.crypto_secretstream_xchacha20poly1305_pull


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class FrameWriter:
    """Encrypts this end's frames on one secret stream (the handshake initialised it)."""

    __slots__ = ("_tx", "max_frame")

    def __init__(self, tx: Any, max_frame: int) -> None:
        self._tx = tx
        self.max_frame = max_frame

    def frame(self, payload: bytes) -> bytes:
        """The wire bytes of one frame carrying ``payload``.

        Raises:
            LocalError: ``payload`` is over ``max_frame`` bytes.
        """
        if type(payload) is not bytes:
            payload = bytes(payload)
        if len(payload) > self.max_frame:
            raise LocalError(f"a frame of {len(payload)} bytes is over max_frame {self.max_frame}")
        prefix = (len(payload) + _ABYTES).to_bytes(4, "big")
        ciphertext: bytes = _push(self._tx, payload, prefix)
        return prefix + ciphertext

    def final(self, reason: str) -> bytes:
        """The wire bytes of the close frame, carrying (the start of) ``reason``."""
        note = reason.encode("utf-8")[:_CLOSE_REASON_MAX]
        prefix = (len(note) + _ABYTES).to_bytes(4, "big")
        ciphertext: bytes = _push(self._tx, note, prefix, _TAG_FINAL)
        return prefix + ciphertext


class FrameReader:
    """Decrypts the peer's frames from received bytes, buffering an incomplete one."""

    __slots__ = ("_buf", "_limit", "_need", "_rx", "max_frame")

    def __init__(self, rx: Any, max_frame: int) -> None:
        self._rx = rx
        self.max_frame = max_frame
        self._limit = max_frame + _ABYTES
        self._buf = bytearray()
        self._need = 0  # buffered bytes needed before parsing is worth trying

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> tuple[list[bytes], str | None]:
        """Consume received bytes; return the frames they complete, in order, and the
        peer's close reason if its close frame came (the stream ends there).

        Raises:
            TransportError: a frame is over the limit, malformed, fails authentication,
                or bytes follow the close frame. Frames decoded earlier in the same call
                are dropped.
        """
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return [], None
            data = bytes(buf)
            buf.clear()
        frames: list[bytes] = []
        size = len(data)
        pos = 0
        limit = self._limit
        rx = self._rx
        while size - pos >= 4:
            prefix = data[pos : pos + 4]
            length = int.from_bytes(prefix, "big")
            if length > limit:
                raise TransportError(
                    f"frame declares {length - _ABYTES} bytes, over the {self.max_frame}-byte limit"
                )
            if length < _ABYTES:
                raise TransportError(f"frame of {length} bytes is shorter than its tag")
            end = pos + 4 + length
            if end > size:
                self._need = 4 + length
                break
            try:
                payload, tag = _pull(rx, data[pos + 4 : end], prefix)
            except nacl.exceptions.CryptoError:
                raise TransportError(
                    "frame failed authentication (tampered, dropped, reordered or replayed)"
                ) from None
            pos = end
            if tag != _TAG_MESSAGE:
                return frames, self._final(tag, payload, trailing=size - pos)
            frames.append(payload)
        else:
            self._need = 4
        if pos < size:
            buf += data[pos:]
        return frames, None

    def _final(self, tag: int, payload: bytes, *, trailing: int) -> str:
        if tag != _TAG_FINAL:
            raise TransportError(f"frame with unexpected stream tag {tag}")
        if trailing:
            raise TransportError("data after the peer's close frame")
        self._rx = None
        reason = payload[:_CLOSE_REASON_MAX].decode("utf-8", "replace")
        return _printable(reason)
