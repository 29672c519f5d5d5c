"""A TCP forwarder on loopback that the soak cuts to make an L1 (RPC) outage."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["Proxy"]


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` at once (RST), waking any thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class Proxy:
    """Forwards TCP connections from a loopback port to ``target``; :meth:`cut` makes an
    outage: ``"reset"`` drops every connection and resets new ones, ``"hang"`` drops them
    and holds new ones unanswered until :meth:`restore` (then drops those too)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.mode: str | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="soak-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.mode == "reset":
                    _reset(client)
                    continue
                if self.mode == "hang":
                    self._held.append(client)
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _reset(src)
            _reset(dst)

    def cut(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            dropped, self._open = self._open, set()
        for sock in dropped:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self.mode = None
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    def close(self) -> None:
        self.cut("reset")
        self.restore()
        _reset(self._listener)
