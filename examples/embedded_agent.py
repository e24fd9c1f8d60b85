#!/usr/bin/env python3
"""A Raven-like node agent built on ravenvpn's public API: what a DaemonSet that embeds ravenvpn does.

    python3 examples/embedded_agent.py --cluster FILE --node NAME [--private-key KEY] [--watch SRC ...]

Without ``--watch`` it brings the node up exactly as ``ravenvpn up`` does: role, raven0, peers, routes,
following FILE (re-read when it changes, or on SIGHUP), clean teardown on SIGTERM/SIGINT.

With ``--watch SRC`` (repeatable; ``-`` is standard input, or a named pipe) FILE is the starting list
and each SRC is a Kubernetes watch stream, as printed by::

    kubectl get gateways.raven.openyurt.io --watch --output-watch-events -o json
    kubectl get nodes --watch --output-watch-events -o json

kubectl watches one resource type per command and ``-o json`` prints every event as a pretty-printed
JSON object over many lines, so a stream is read as concatenated JSON values, not lines. ADDED and
MODIFIED replace an object, DELETED removes it, BOOKMARK is ignored; on ERROR (410 Gone: the watch is
too old) the last good state is kept and the log says a fresh list is needed. Changes arriving close
together are reconciled once (debounced). A named pipe is reopened when its writer goes away, so a
restarted kubectl can write to it again.

It imports nothing from ravenvpn but top-level names: it is the example of the library's front door.
"""
from __future__ import annotations

import argparse
import codecs
import json
import logging
import os
import queue
import signal
import stat
import sys
import threading
from typing import Any, Iterable, Iterator

import yaml

import ravenvpn

log = logging.getLogger("embedded-agent")

DEBOUNCE = 0.2      # seconds: events closer together than this are reconciled once

# --------------------------------------------------------------------------------------------------
# Kubernetes watch streams
# --------------------------------------------------------------------------------------------------


class StreamError(Exception):
    """A watch stream that cannot be read on: not JSON, or too large a value."""


MAX_VALUE_BYTES = 16 << 20     # a Gateway or Node is a few KiB; 16 MiB of one value is garbage


def json_values(chunks: Iterable[bytes]) -> Iterator[Any]:
    """Yield each JSON value of a stream of concatenated JSON values.

    `kubectl get ... --watch --output-watch-events -o json` prints each event as a pretty-printed
    object over many lines, with no separator but whitespace, so the stream is read as values, not
    lines. `chunks` are the bytes as they arrive (any split, even inside a UTF-8 sequence).

    Raises:
        StreamError: text that is not JSON (reported with the byte offset), or an unfinished value at
            the end of the stream, or one value larger than MAX_VALUE_BYTES.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
    buf = ""
    consumed = 0
    for chunk in chunks:
        try:
            buf += utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise StreamError(f"not UTF-8 text near byte {consumed}: {exc.reason}") from None
        while True:
            stripped = buf.lstrip()
            consumed += len(buf) - len(stripped)
            buf = stripped
            if not buf:
                break
            if buf[0] not in "{[":
                raise StreamError(f"not a JSON object at offset {consumed}: {buf[:20]!r}")
            try:
                value, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                # Most likely the value is not complete yet: wait for more bytes.
                if len(buf) > MAX_VALUE_BYTES:
                    raise StreamError(f"a JSON value at offset {consumed} is larger than "
                                      f"{MAX_VALUE_BYTES} bytes or malformed") from None
                break
            consumed += end
            buf = buf[end:]
            yield value
    if buf.strip():
        try:
            decoder.raw_decode(buf.lstrip())
        except json.JSONDecodeError as exc:
            raise StreamError(f"the stream ended inside a JSON value at offset {consumed}: {exc.msg}") from None


ObjectKey = tuple[str, str, str]   # (kind, namespace, name)


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))


class ClusterView:
    """The cluster objects the agent plans from: a starting list, then watch events applied in order.

    Thread-safety: not thread-safe; the agent's main loop is its only user.
    """

    def __init__(self, objects: Iterable[dict[str, Any]] = ()) -> None:
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        for obj in objects:
            self._objects[object_key(obj)] = obj

    def objects(self) -> list[dict[str, Any]]:
        """The current objects, in a stable order (kind, namespace, name)."""
        return [self._objects[k] for k in sorted(self._objects)]

    def apply(self, source: str, value: Any) -> bool:
        """Apply one value read from a watch stream; True when the objects changed.

        ADDED/MODIFIED upsert, DELETED removes, BOOKMARK is ignored; a bare object (a watch without
        --output-watch-events) upserts, and a `kind: ...List` replaces nothing but upserts its items.
        On ERROR (e.g. 410 Gone: the watch's resourceVersion is too old) the last good state is kept
        and a warning says a fresh list is needed.
        """
        if not isinstance(value, dict):
            log.warning("%s: ignoring a %s where a watch event was expected", source, type(value).__name__)
            return False
        if "type" in value and "object" in value and "kind" not in value:
            kind, obj = value.get("type"), value.get("object")
            if kind == "BOOKMARK":
                return False
            if kind == "ERROR":
                status = obj if isinstance(obj, dict) else {}
                log.warning("%s: watch ERROR %s %s: %s; keeping the last good state — a fresh list is "
                            "needed (run 'kubectl get ... -o json' again and restart the watch)", source,
                            status.get("code", "?"), status.get("reason", ""), status.get("message", ""))
                return False
            if not isinstance(obj, dict) or not (obj.get("metadata") or {}).get("name"):
                log.warning("%s: ignoring a %s event without an object name", source, kind)
                return False
            key = object_key(obj)
            if kind in ("ADDED", "MODIFIED"):
                changed = self._objects.get(key) != obj
                self._objects[key] = obj
                return changed
            if kind == "DELETED":
                return self._objects.pop(key, None) is not None
            log.warning("%s: ignoring a watch event of unknown type %r", source, kind)
            return False
        if str(value.get("kind", "")).endswith("List"):
            changed = False
            for item in value.get("items") or []:
                changed |= self.apply(source, {"type": "MODIFIED", "object": item})
            return changed
        return self.apply(source, {"type": "MODIFIED", "object": value})


# --------------------------------------------------------------------------------------------------
# readers: one thread per watch source, events into one queue
# --------------------------------------------------------------------------------------------------


def _chunks(fd: int) -> Iterator[bytes]:
    """The bytes of ``fd`` as they arrive, until end of file."""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        yield chunk


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def follow(source: str, events: "queue.Queue[tuple[str, Any]]", stopping: threading.Event) -> None:
    """Read ``source`` (a path, a named pipe or ``-``) and put ``(source, value)`` on ``events``.

    A named pipe is opened again after its writer closed it; a file or standard input is read once.
    A stream that is not JSON is reported in one line and followed no further.
    """
    reopen = source != "-" and _is_fifo(source)
    while not stopping.is_set():
        try:
            fd = 0 if source == "-" else os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.error("--watch %s: cannot open: %s", source, exc.strerror)
            return
        try:
            for value in json_values(_chunks(fd)):
                events.put((source, value))
        except StreamError as exc:
            log.error("--watch %s: %s; no longer following it", source, exc)
            return
        except OSError as exc:
            log.error("--watch %s: %s", source, exc.strerror)
            return
        finally:
            if fd != 0:
                os.close(fd)
        if not reopen:
            log.info("--watch %s: end of stream", source)
            return


# --------------------------------------------------------------------------------------------------
# the agent
# --------------------------------------------------------------------------------------------------


def read_objects(path: str) -> list[dict[str, Any]]:
    """The objects of a YAML or JSON file (multi-document or ``kind: List``)."""
    with open(path, encoding="utf-8") as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc is not None]
    view = ClusterView()
    for doc in docs:
        view.apply(path, doc)
    return view.objects()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True, help="Gateway and Node objects (YAML/JSON), the starting list")
    p.add_argument("--node", required=True, help="this node's name")
    p.add_argument("--private-key", help="base64 WireGuard private key file (mode 0600)")
    p.add_argument("--watch", action="append", default=[], metavar="SRC",
                   help="a kubectl watch stream (-o json --output-watch-events): a file, a named pipe or -")
    p.add_argument("--interface", default="raven0", help="tunnel interface (default raven0)")
    p.add_argument("--port", type=int, default=4500, help="UDP listen port (default 4500)")
    p.add_argument("--state-dir", default=None, help="records for ravenvpn status/down (default /run/ravenvpn)")
    p.add_argument("--no-failover", action="store_true",
                   help="no automatic gateway failover (liveness on UDP 4501): only the cluster moves the gateway")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="embedded-agent: %(levelname)s: %(message)s")
    try:
        view = ClusterView(read_objects(args.cluster)) if args.watch else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        print(f"embedded-agent: {args.cluster}: {exc}", file=sys.stderr)
        return 1
    options: dict[str, Any] = {"interface": args.interface, "port": args.port,
                               "private_key_path": args.private_key, "failover": not args.no_failover}
    if args.state_dir:
        options["state_dir"] = args.state_dir
    try:
        agent = ravenvpn.Agent(view.objects() if view else args.cluster, args.node, **options)
    except ravenvpn.RavenError as exc:
        print(f"embedded-agent: {exc}", file=sys.stderr)
        return 1

    # Signals are the application's business, not the library's: they only ask the agent.
    signal.signal(signal.SIGTERM, lambda *_: agent.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: agent.stop("SIGINT"))
    signal.signal(signal.SIGHUP, lambda *_: agent.reload())

    stopping = threading.Event()
    events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    threads = [threading.Thread(target=follow, args=(src, events, stopping), daemon=True, name=f"watch {src}")
               for src in args.watch]

    def apply_events() -> None:
        """Fold watch events into the view; one set_cluster per burst (debounced)."""
        assert view is not None
        while not stopping.is_set():
            try:
                item = events.get(timeout=0.5)
            except queue.Empty:
                continue
            changed = view.apply(*item)
            while True:         # take everything that arrives within DEBOUNCE of the last event
                try:
                    changed |= view.apply(*events.get(timeout=DEBOUNCE))
                except queue.Empty:
                    break
            if changed:
                log.info("cluster changed (watch): reconciling")
                agent.set_cluster(view.objects())

    if view is not None:
        threads.append(threading.Thread(target=apply_events, daemon=True, name="apply events"))
    for t in threads:
        t.start()
    try:
        return agent.run()
    except ravenvpn.RavenError as exc:
        print(f"embedded-agent: {exc}", file=sys.stderr)
        return 1
    finally:
        stopping.set()


if __name__ == "__main__":
    sys.exit(main())
