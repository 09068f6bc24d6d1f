"""A TCP proxy in front of MariaDB: the fault tests cut a process off and restore it; the
benches add a network round trip and count the round trips.

- `cut()` resets every open connection and stops listening (new connections are refused,
  as when the database host is down); `restore()` listens again on the same port.
- `rtt_ms` delays each client command (a MySQL protocol packet with sequence id 0: a query,
  COMMIT, `SET autocommit`, ...) by that long before passing it on, once per command
  whatever its size: the round trip a statement costs to a database across a network.
- `commands` counts those commands over all connections: the client's round trips (a
  multi-statement query is one). Read it before and after the work to measure. Set
  `heads = []` to also keep each command's first bytes; `kinds()` then tells them apart.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(
        self, target_host: str, target_port: int, *, listen_port: int = 0, rtt_ms: float = 0.0
    ) -> None:
        if rtt_ms < 0:
            raise ValueError("rtt_ms must be >= 0")
        self.target = (target_host, target_port)
        self.port = listen_port
        self.delay = rtt_ms / 1000
        self.commands = 0  # client commands (round trips) passed on, all connections
        self.heads: list[bytes] | None = None  # when a list: each command's first bytes
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connections = 0  # accepted since start: shows the process did reconnect

    # --- control ------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._listen()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._close_listener()
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            for s in pair:
                _reset(s)

    def restore(self) -> None:
        self._listen()

    def stop(self) -> None:
        self._stop.set()
        self.cut()

    def kinds(self) -> collections.Counter[str]:
        """The commands noted since `heads` was set to a list, by kind (command_kind)."""
        with self._lock:
            heads = list(self.heads or ())
        return collections.Counter(command_kind(bytes(h)) for h in heads)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    # --- plumbing -----------------------------------------------------------------------
    def _listen(self) -> None:
        if self._listener is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    def _close_listener(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by cut()/stop()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for s in (client, upstream):
                # Chunks are relayed as they come: with Nagle, a statement's second chunk
                # would wait for the first one's (delayed) ACK.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.add(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        a, b = pair
        framer = CommandFramer()
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in sel.select(timeout=1.0):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    if key.fileobj is a:  # client -> server
                        started = framer.feed(data)
                        if started:
                            with self._lock:
                                self.commands += len(started)
                                if self.heads is not None:
                                    self.heads.extend(started)
                            if self.delay:
                                # The client waits for the answer, so nothing else is due
                                # on this connection meanwhile: sleeping here is the delay.
                                time.sleep(self.delay)
                    key.data.sendall(data)
                with self._lock:
                    if pair not in self._pairs:
                        return
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._pairs.discard(pair)
            for s in pair:
                with contextlib.suppress(OSError):
                    s.close()


class CommandFramer:
    """Follows the client's MySQL packets (3-byte length, 1-byte sequence id) across recv()
    chunks and notes the packets that start a command (sequence id 0), with the first
    bytes of each. The handshake reply has sequence id 1, and a packet over 16 MB continues
    with ids 1, 2, ...: neither counts. Assumes no TLS (the local MariaDB has none)."""

    HEAD_BYTES = 160

    def __init__(self) -> None:
        self.header = b""
        self.body_left = 0
        self.head: bytearray | None = None  # first bytes of the command being read

    def feed(self, data: bytes) -> list[bytes]:
        """The heads of the commands completed or started in this chunk."""
        started: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if self.body_left:
                step = min(self.body_left, n - i)
                if self.head is not None and len(self.head) < self.HEAD_BYTES:
                    self.head += data[i : i + min(step, self.HEAD_BYTES - len(self.head))]
                self.body_left -= step
                i += step
                continue
            take = min(4 - len(self.header), n - i)
            self.header += data[i : i + take]
            i += take
            if len(self.header) == 4:
                self.body_left = int.from_bytes(self.header[:3], "little")
                if self.header[3] == 0:
                    self.head = bytearray()
                    started.append(self.head)  # filled in place as the body arrives
                self.header = b""
        return started


def command_kind(head: bytes) -> str:
    """A short label of a client command: `INSERT syncer_keystate`, `COMMIT`, `ping`...; a
    multi-statement query is labelled statement by statement (`START TRANSACTION; INSERT
    syncer_keystate; ...`, the dots when the noted head was cut short)."""
    if not head or head[0] != 0x03:  # not COM_QUERY
        return {0x01: "quit", 0x0E: "ping", 0x02: "use database"}.get(
            head[0] if head else -1, "other"
        )
    text = head[1:].decode("utf-8", "replace").replace("`", "")
    labels = [_statement_kind(part.split()) for part in text.split(";") if part.strip()]
    if len(head) >= CommandFramer.HEAD_BYTES and len(labels) > 1:
        labels.append("...")
    return "; ".join(labels) or "empty query"


def _statement_kind(words: list[str]) -> str:
    verb = words[0].upper()
    upper = [w.upper() for w in words]
    for marker in ("INTO", "FROM", "UPDATE"):
        if marker in upper[:-1]:
            return f"{verb} {words[upper.index(marker) + 1].split('(')[0]}"
    return " ".join(words[:2]) if verb in ("SET", "START") else verb


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', like a dead link."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()
