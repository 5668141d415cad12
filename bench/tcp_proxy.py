"""A TCP proxy that can be cut and restored, to take a database "down" for a test without stopping the server.

The machine's PostgreSQL server is shared by every test, so the outage tests put
this proxy between the assistant and the server: `cut()` closes the listening
socket and every open connection (clients see refused or broken connections,
as when the server stops); `restore()` listens again on the same port.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import List, Optional, Tuple


class TcpProxy:
    """Forwards 127.0.0.1:<port> to target, in threads; cut() and restore() simulate an outage."""

    def __init__(self, target: Tuple[str, int], port: int = 0) -> None:
        """Proxy to target (host, port); port 0 picks a free one (kept across cut/restore)."""
        self.target = target
        self.port = port
        self._listener: Optional[socket.socket] = None
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> "TcpProxy":
        """Listen and start forwarding."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        """Accept clients until the listener is closed."""
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way until either side closes."""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Stop listening and break every open connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self.start()

    def close(self) -> None:
        """Cut for good."""
        self.cut()
