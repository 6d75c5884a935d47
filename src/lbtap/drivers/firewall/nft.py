"""Running nftables scripts inside a network namespace.

``Nft`` talks to the kernel through libnftables (ctypes) from a thread that has entered
the namespace: no fork per call (an ``nft`` process costs ~3-5 ms, ``ip netns exec``
more), and one script is still one netlink batch, i.e. one transaction. When
libnftables is not loadable it falls back to ``nft -f -`` forked from a thread inside the
namespace (a forked child inherits the calling thread's namespace).

Errors become ``lbtap.drivers.host.errors`` types, picked from the errno text nft
prints ("Could not process rule: No such file or directory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import subprocess
import threading
from typing import Any

from lbtap.drivers.host import errors
from lbtap.drivers.host.netns import in_namespace

_OUTPUT_JSON = 1 << 4
_ERRNO_BY_TEXT = {os.strerror(code): code for code in (
    errno.ENOENT, errno.EEXIST, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBUSY,
    errno.ENOBUFS, errno.EAGAIN, errno.ENOMEM, errno.EPROTONOSUPPORT, errno.E2BIG, errno.ERANGE,
)}


def _load_lib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


_LIB = _load_lib()


def error_from_nft(message: str, *, op: str) -> errors.HostError:
    """Typed error for nft's error text; syntax errors are ``InvalidArgument``."""
    for text, code in _ERRNO_BY_TEXT.items():
        if text in message:
            return errors.from_errno(code, message.strip(), op=op)
    if "syntax error" in message or "Error:" in message:
        return errors.InvalidArgument(message.strip(), op=op, code=errno.EINVAL)
    return errors.HostError(message.strip(), op=op)


class Nft:
    """Runs nft commands in namespace ``netns`` (None: the caller's namespace).

    Thread-safe: a lock serialises calls, as nft contexts are not re-entrant.
    """

    def __init__(self, netns: str | None = None, *, use_library: bool = True):
        self.netns = netns
        self._lock = threading.Lock()
        self._ctx = None
        self._lib = _LIB if use_library else None

    def _context(self) -> int:
        if self._ctx is None:
            ctx = self._lib.nft_ctx_new(0)
            if not ctx:
                raise errors.HostError("nft_ctx_new failed", op="nft")
            self._lib.nft_ctx_buffer_output(ctx)
            self._lib.nft_ctx_buffer_error(ctx)
            self._ctx = ctx
        return self._ctx

    def run(self, script: str, *, json_output: bool = False, op: str = "nft") -> str:
        """Run ``script`` (one transaction) and return nft's output."""
        if not script.strip():
            return ""
        with self._lock, in_namespace(self.netns):
            # Entering the namespace for every call (not just at context creation)
            # keeps this correct whatever libnftables does with its socket.
            if self._lib is None:
                return self._run_process(script, json_output, op)
            ctx = self._context()
            self._lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON if json_output else 0)
            rc = self._lib.nft_run_cmd_from_buffer(ctx, script.encode())
            out = (self._lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        if rc != 0:
            raise error_from_nft(err or "nft failed", op=op)
        return out

    def _run_process(self, script: str, json_output: bool, op: str) -> str:
        cmd = ["nft", "-j", "-f", "-"] if json_output else ["nft", "-f", "-"]
        try:
            p = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=30)
        except FileNotFoundError as e:
            raise errors.NotSupported("nft is not installed", op=op, code=errno.ENOENT) from e
        if p.returncode != 0:
            raise error_from_nft(p.stderr or "nft failed", op=op)
        return p.stdout

    def json(self, command: str) -> list[dict[str, Any]]:
        """``nft -j <command>`` parsed: the list under "nftables"."""
        out = self.run(command, json_output=True, op="nft_list")
        return json.loads(out).get("nftables", []) if out.strip() else []

    def table_exists(self, family: str, table: str) -> bool:
        try:
            self.run(f"list table {family} {table}", op="nft_list")
        except errors.NotFound:
            return False
        return True

    def counters(self, family: str, table: str) -> dict[str, int]:
        """Named counters of a table: name -> packets (empty if the table is missing)."""
        try:
            items = self.json(f"list counters table {family} {table}")
        except errors.NotFound:
            return {}
        return {i["counter"]["name"]: int(i["counter"]["packets"]) for i in items if "counter" in i}

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


def nft_available() -> str | None:
    """None if nft can be used, else the reason."""
    if _LIB is not None:
        return None
    try:
        subprocess.run(["nft", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"neither libnftables nor nft usable: {e}"
    return None

