"""The UAPI Unix socket at /var/run/wireguard/IFNAME.sock and its accept thread."""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading

from ..errors import StartupError
from .uapi import Uapi

SOCKET_DIR = "/var/run/wireguard"      # fixed: `wg` and `wg-quick` look exactly here

log = logging.getLogger("ravenvpn.uapi")


def socket_path(ifname: str) -> str:
    """/var/run/wireguard/IFNAME.sock: where `wg` looks for the interface's UAPI."""
    return os.path.join(SOCKET_DIR, f"{ifname}.sock")


def check_not_in_use(ifname: str) -> None:
    """Refuse if a live daemon answers on the interface's socket; remove a stale one.

    Raises:
        StartupError: the path is not a socket, cannot be checked, or a live daemon answers on it.
    """
    path = socket_path(ifname)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            raise StartupError(f"cannot check {path}: {exc.strerror}") from None
        os.unlink(path)      # nobody listens: left over from a daemon that died
        log.info("removed stale UAPI socket %s", path)
        return
    finally:
        probe.close()
    raise StartupError(f"interface {ifname} is already handled by another daemon ({path} is live)")


class UapiServer:
    """The UAPI socket of one interface: an accept thread, one thread per client connection."""

    def __init__(self, ifname: str, uapi: Uapi) -> None:
        self.ifname = ifname
        self.path = socket_path(ifname)
        self.uapi = uapi
        self.listener: socket.socket | None = None
        self._inode: int | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def open(self) -> None:
        """Create and listen on the socket (0600, root only).

        Raises:
            StartupError: the socket is in use, or cannot be created.
        """
        check_not_in_use(self.ifname)
        os.makedirs(SOCKET_DIR, mode=0o700, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o077)          # the socket grants configuration rights: root only
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)       # umask 077 leaves 0700; x means nothing on a socket
        except OSError as exc:
            listener.close()
            raise StartupError(f"cannot create {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        listener.listen(16)
        self.listener = listener
        self._inode = os.stat(self.path).st_ino

    def start(self) -> None:
        """Start accepting clients (a daemon thread)."""
        threading.Thread(target=self._accept_loop, name="uapi-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        listener = self.listener        # close() clears the attribute; keep our own reference
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return          # listener shut down
            threading.Thread(target=self._serve, args=(conn,), name="uapi-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        try:
            self.uapi.serve(conn)
        except Exception:       # a bug in one request must not take the daemon down
            log.exception("UAPI: internal error")
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()

    def still_ours(self) -> bool:
        """False once someone removed or replaced our socket file (wireguard-go then exits too)."""
        try:
            return os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def close(self) -> None:
        """Remove the socket file (if still ours), stop accepting, end open client connections."""
        if self.listener is None:
            return
        if self.still_ours():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        try:
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the accept thread
        except OSError:
            pass
        self.listener.close()
        self.listener = None
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:          # a client mid-request gets EOF instead of a dead daemon's silence
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
