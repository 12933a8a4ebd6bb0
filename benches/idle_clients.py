#!/usr/bin/env python3
"""Opens N idle client connections to a Postgres-protocol server (trust auth), prints "ready N" once every
one has reached ReadyForQuery, then holds them until stdin closes or SIGTERM. Used to measure a proxy's
memory per idle client."""
import selectors
import signal
import socket
import struct
import sys


def startup(user, database):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "postgres"
    database = sys.argv[5] if len(sys.argv) > 5 else "postgres"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    socks, pending = [], {}
    packet = startup(user, database)
    for i in range(count):
        s = socket.create_connection((host, port))
        s.sendall(packet)
        s.setblocking(False)
        socks.append(s)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
        # Let the proxy keep up instead of overflowing its accept backlog.
        if i % 200 == 199:
            drain(sel, pending, block=False)
    while pending:
        drain(sel, pending, block=True)
    print(f"ready {len(socks)}", flush=True)
    sys.stdin.read()


def drain(sel, pending, block):
    for key, _ in sel.select(timeout=5 if block else 0):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            sys.exit(f"connection closed during startup: {pending.get(s, b'')[:200]!r}")
        buf = pending[s] + data
        while len(buf) >= 5:
            tag, length = buf[0:1], struct.unpack("!i", buf[1:5])[0]
            if len(buf) < length + 1:
                break
            if tag == b"E":
                sys.exit(f"error during startup: {buf[:length + 1]!r}")
            buf = buf[length + 1:]
            if tag == b"Z":
                sel.unregister(s)
                del pending[s]
                buf = None
                break
        if buf is not None:
            pending[s] = buf


if __name__ == "__main__":
    main()
