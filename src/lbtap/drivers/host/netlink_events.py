"""Link events from a namespace: a raw ``RTMGRP_LINK`` netlink socket and a reader thread.

Why a raw socket rather than pyroute2's ``IPRoute.bind()``: the sync ``IPRoute`` keeps a
socket *per thread* (created lazily in whatever namespace that thread is in) and cannot
be woken from another thread; a plain socket plus a wake-up pipe gives a reader we can
stop promptly, that is bound to the namespace it was opened in, and that sees ENOBUFS.
Messages are parsed with the same lean parser as link dumps (``netlink_dump``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
from typing import Callable

from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import LinkEvent
from lbtap.drivers.host import netlink_dump

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
AF_BRIDGE = 7
DEFAULT_RCVBUF = 4 << 20


class LinkWatcher:
    """Delivers ``LinkEvent``s for one namespace to ``callback`` from its own thread.

    After an overflow (ENOBUFS: the kernel dropped events because we were slow) it
    emits ``LinkEvent("overflow")`` and reopens the socket, so the consumer does a full
    reconcile and then keeps receiving events.
    """

    def __init__(self, netns: str | None, callback: Callable[[LinkEvent], None], *,
                 snapshot: Callable[[], dict[int, str]], rcvbuf: int = DEFAULT_RCVBUF):
        self.netns = netns
        self.callback = callback
        self.rcvbuf = rcvbuf
        self.overflows = 0
        self._snapshot = snapshot  # index -> name map, read in the watched namespace
        self._names: dict[int, str] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._state_lock = threading.Lock()
        self._done = False  # set once the pipe is closed: never write to a reused fd
        self._sock = self._open()  # opened here so that events start before we return
        self._thread = threading.Thread(target=self._run, name=f"lbtap-links-{netns or 'self'}", daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket:
        with netns_mod.in_namespace(self.netns):
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.bind((0, RTMGRP_LINK))
        except OSError:
            s.close()
            raise
        # Subscribed first, then the names: an event in between is seen twice, never lost.
        self._names = dict(self._snapshot())
        return s

    def stop(self) -> None:
        """Stop the reader thread and close the socket (idempotent)."""
        with self._state_lock:
            if self._done:
                return
            os.write(self._stop_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _emit(self, ev: LinkEvent) -> None:
        try:
            self.callback(ev)
        except Exception:  # a consumer bug must not kill event delivery
            log.exception("link event callback failed on %s", ev)

    def _run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self._sock, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                try:
                    data = self._sock.recv(1 << 20)
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        log.error("link event socket failed: %s; reopening", e)
                    self.overflows += 1
                    self._sock.close()
                    self._sock = self._open()
                    self._emit(LinkEvent("overflow"))
                    continue
                off = 0
                while off + 16 <= len(data):
                    length, mtype = struct.unpack_from("=IH", data, off)
                    if length < 16:
                        break
                    self._handle(mtype, (data, off, off + length))
                    off += (length + 3) & ~3
        except Exception:
            log.exception("link watcher for %s died", self.netns)
            self._emit(LinkEvent("overflow"))
        finally:
            self._sock.close()
            with self._state_lock:
                self._done = True
                os.close(self._stop_r)
                os.close(self._stop_w)

    def _handle(self, mtype: int, m: tuple[bytes, int, int]) -> None:
        if mtype not in (RTM_NEWLINK, RTM_DELLINK) or m[0][m[1] + 16] == AF_BRIDGE:
            return  # AF_BRIDGE copies repeat bridge-port news already sent as AF_UNSPEC
        index, name = netlink_dump.msg_index(m), netlink_dump.msg_name(m)
        if mtype == RTM_NEWLINK:
            old = self._names.get(index)
            self._names[index] = name
            if old is not None and old != name:
                self._emit(LinkEvent("del", None, old))  # a rename is the old name gone
            self._emit(LinkEvent("new", netlink_dump.parse(m, self._names)[0], name))
        else:
            link = netlink_dump.parse(m, self._names)[0]
            self._names.pop(index, None)
            self._emit(LinkEvent("del", link, name))
