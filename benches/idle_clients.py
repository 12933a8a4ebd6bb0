#!/usr/bin/env python3
"""Open N idle client connections to a Postgres-protocol server and hold them.

Each connection sends a protocol v3 StartupMessage, expects trust authentication (AuthenticationOk) and
reads until ReadyForQuery ('Z'). When every connection is idle the script prints "ready N" on stdout, then
holds them until stdin closes, SIGTERM/SIGINT arrives, or --hold seconds pass; then it sends Terminate on
each and exits 0. Anything that goes wrong (refused connection, ErrorResponse, an authentication method
other than trust, timeout) is printed on stderr and the exit status is 1.

Used by benches/pgbench.sh to measure a proxy's memory per idle client:

    python3 benches/idle_clients.py 127.0.0.1 6432 2000            # prints "ready 2000", waits on stdin
    python3 benches/idle_clients.py 127.0.0.1 6432 2000 --hold 30  # or holds 30 s

Standard library only.
"""
import argparse
import errno
import resource
import selectors
import signal
import socket
import struct
import sys
import time

PROTOCOL_V3 = 196608


class Failure(Exception):
    pass


def startup_packet(user, database):
    body = struct.pack("!i", PROTOCOL_V3)
    for key, value in (("user", user), ("database", database), ("application_name", "idle_clients")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def error_text(payload):
    """Human-readable text of an ErrorResponse/NoticeResponse body."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '')}: {fields.get('M', payload[:200])}"


AUTH_NAMES = {2: "Kerberos", 3: "cleartext password", 5: "MD5 password", 7: "GSS", 9: "SSPI", 10: "SASL"}


class Conn:
    __slots__ = ("sock", "buf", "index")

    def __init__(self, sock, index):
        self.sock, self.buf, self.index = sock, b"", index

    def feed(self, data):
        """Consume server bytes during startup. Returns True once ReadyForQuery arrived."""
        self.buf += data
        while len(self.buf) >= 5:
            tag = self.buf[0:1]
            length = struct.unpack("!i", self.buf[1:5])[0]
            if length < 4 or length > 1 << 24:
                raise Failure(f"connection {self.index}: malformed message (tag {tag!r}, length {length})")
            if len(self.buf) < 1 + length:
                break
            payload, self.buf = self.buf[5:1 + length], self.buf[1 + length:]
            if tag == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code != 0:
                    raise Failure(f"connection {self.index}: server asked for "
                                  f"{AUTH_NAMES.get(code, f'auth method {code}')}; only trust is supported")
            elif tag == b"E":
                raise Failure(f"connection {self.index}: {error_text(payload)}")
            elif tag == b"Z":
                if self.buf:
                    raise Failure(f"connection {self.index}: unexpected data after ReadyForQuery")
                return True
            # 'S' ParameterStatus, 'K' BackendKeyData, 'N' NoticeResponse, 'v' NegotiateProtocolVersion: skip
        return False


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(max(soft, needed), hard)
    if soft != resource.RLIM_INFINITY and want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise Failure(f"open-files limit is {soft} (hard {hard}); {needed} needed: raise it with ulimit -n")


def connect(host, port, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            # A full accept backlog shows up as a timeout or, with tcp_abort_on_overflow, a reset: retry.
            if e.errno in (errno.ECONNREFUSED,) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def open_all(args, sel):
    packet = startup_packet(args.user, args.database)
    deadline = time.monotonic() + args.timeout
    pending, ready = {}, []

    def pump(block):
        if not pending:
            return
        wait = max(0.0, min(1.0, deadline - time.monotonic())) if block else 0
        for key, _ in sel.select(timeout=wait):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                raise Failure(f"connection {conn.index}: {e}") from None
            if not data:
                raise Failure(f"connection {conn.index}: server closed the connection during startup")
            if conn.feed(data):
                sel.unregister(conn.sock)
                del pending[conn.sock]
                ready.append(conn)
        if block and time.monotonic() >= deadline:
            raise Failure(f"timed out after {args.timeout:g} s: {len(ready)} of {args.count} connections ready")

    for i in range(args.count):
        while len(pending) >= args.concurrency:
            pump(block=True)
        try:
            sock = connect(args.host, args.port, max(0.1, deadline - time.monotonic()))
        except OSError as e:
            raise Failure(f"connection {i}: cannot connect to {args.host}:{args.port}: {e}") from None
        sock.sendall(packet)
        sock.setblocking(False)
        conn = Conn(sock, i)
        pending[sock] = conn
        sel.register(sock, selectors.EVENT_READ, conn)
        pump(block=False)
    while pending:
        pump(block=True)
    return ready


def hold(args, sel, conns):
    """Wait for stdin EOF / signal / --hold timeout; count connections the server closes meanwhile."""
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    watch_stdin = args.hold is None
    if watch_stdin:
        try:
            sel.register(sys.stdin, selectors.EVENT_READ, None)
        except (OSError, ValueError):
            # Not pollable (a regular file or /dev/null): hold until reading it hits end of file.
            while sys.stdin.buffer.read(65536):
                pass
            return 0
    end = None if args.hold is None else time.monotonic() + args.hold
    closed = 0
    while True:
        wait = None if end is None else end - time.monotonic()
        if wait is not None and wait <= 0:
            break
        events = sel.select(timeout=wait)
        for key, _ in events:
            if key.data is None:
                if not sys.stdin.buffer.raw.read(4096):
                    return closed
                continue
            try:
                data = key.data.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(key.data.sock)
    return closed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int, help="number of idle client connections")
    p.add_argument("--user", default="postgres")
    p.add_argument("--database", default="postgres")
    p.add_argument("--timeout", type=float, default=120, help="seconds allowed for all startups (default 120)")
    p.add_argument("--concurrency", type=int, default=100,
                   help="startups in flight at once, so the server's accept backlog is not flooded (default 100)")
    p.add_argument("--hold", type=float, default=None,
                   help="hold for this many seconds instead of until stdin closes")
    args = p.parse_args()
    if args.count < 1 or args.concurrency < 1:
        p.error("count and --concurrency must be at least 1")

    def stop(signum, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sel = selectors.DefaultSelector()
    conns = []
    try:
        raise_fd_limit(args.count + 64)
        started = time.monotonic()
        conns = open_all(args, sel)
        print(f"ready {len(conns)}", flush=True)
        print(f"idle_clients: {len(conns)} connections ready in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
        closed = hold(args, sel, conns)
        if closed:
            print(f"idle_clients: the server closed {closed} of {len(conns)} idle connections",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    except Failure as e:
        print(f"idle_clients: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        terminate = b"X\0\0\0\4"
        for conn in conns:
            try:
                conn.sock.send(terminate)
                conn.sock.close()
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
