"""Record a vCenter's (the simulator's) HTTPS answers once, then replay them byte for byte from a
minimal loopback server: the client's speed without the server's.

Used by benchmarks/vsphere_inventory.py (--modes replay). Recording: an in-process TLS proxy
in front of the simulator stores, for each request (method, path, body), the first answer's
status, Content-Type, Set-Cookie and body; it also counts round trips, bytes and the upstream's
time to answer per labelled case. Replay: ``python benchmarks/vsphere_replay.py serve`` (its own
process, so its CPU is measured apart from the client's) loads the recording and answers each
request with the recorded bytes, prebuilt, with Content-Length (the simulator sends large bodies
chunked: the body bytes are the same, the framing is not). A request never recorded gets a 404
naming it, and the benchmark fails on it: a replay only measures what was recorded.

Why keyed by body: every SOAP request of a run is fully determined by the answers before it
(pyVmomi writes no timestamps or nonces; the session is in a cookie header, not in the body), so
a run replayed against the first run's answers sends exactly the first run's requests. The
answers that differ between live runs (a new ContainerView id each time, a new session key) are
replayed as the first run saw them.

HTTP/1.1 as RFC 9112 frames it (request line, headers, CRLF, Content-Length body; keep-alive
unless "Connection: close"); pyVmomi's SoapStubAdapter (vmware/pyvmomi pyVmomi/SoapAdapter.py)
POSTs with Content-Length and reuses its connections, which is all this server speaks.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pickle
import re
import socket
import ssl
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Key = tuple[str, str, bytes]  # method, path, body (view ids blanked: keyed())
# vcsim names each ContainerView "session[<session key>]<random uuid>" (govmomi simulator
# session_manager.go, Session.setReference): a request naming the view is keyed without that name,
# so the case that created another view than the first-recorded one still finds its answer
_SESSION_REF = re.compile(rb"session\[[^\]<]*\][0-9a-fA-F-]{36}")


def keyed(body: bytes) -> bytes:
    return _SESSION_REF.sub(b"session[]", body)
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
KEPT_HEADERS = ("Content-Type", "Set-Cookie")


@dataclass
class Traffic:
    """What one case sent and got: round trips, bytes, and the server's time to answer (to the first
    byte of each answer, as the proxy saw it: the simulator writes its whole answer before sending)."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent: int = 0
    received: int = 0
    server_s: float = 0.0
    largest: int = 0

    def add(self, method: str, sent: int, received: int, seconds: float) -> None:
        self.calls[method] += 1
        self.sent += sent
        self.received += received
        self.server_s += seconds
        self.largest = max(self.largest, received)

    def describe(self) -> str:
        calls = ", ".join(f"{n} x{c}" for n, c in sorted(self.calls.items(), key=lambda x: -x[1]))
        return (f"{sum(self.calls.values())} round trips ({calls}); sent {self.sent / 1e3:.1f} KB, "
                f"received {self.received / 1e6:.2f} MB (largest answer {self.largest / 1e6:.2f} MB); "
                f"server's time to first byte {self.server_s:.3f} s")


def soap_method(body: bytes) -> str:
    """The SOAP operation of a request body (<soapenv:Body><Name ...>), for the traffic tables."""
    at = body.find(b"Body>")
    if at < 0:
        return "GET" if not body else "?"
    start = body.find(b"<", at) + 1
    end = min(i for i in (body.find(b" ", start), body.find(b">", start)) if i >= 0)
    return body[start:end].decode("ascii", "replace")


def response_bytes(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    head += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def read_request(conn: ssl.SSLSocket, buf: bytearray) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request from a keep-alive connection (None when the client closed it)."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > MAX_HEAD and b"\r\n\r\n" not in buf:
            raise ValueError("request head larger than 64 KiB")
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("chunked request bodies are not supported (pyVmomi sends Content-Length)")
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise ValueError(f"request body of {length} bytes")
    while len(buf) < length:
        chunk = conn.recv(max(65536, length - len(buf)))
        if not chunk:
            return None
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return method, path, headers, body


class TlsServer:
    """A threaded TLS server on 127.0.0.1; ``answer(method, path, headers, body)`` gives the raw
    response bytes. One thread per connection: pyVmomi keeps one or two connections open."""

    def __init__(self, cert: Path, key: Path, answer: Callable[[str, str, dict[str, str], bytes], bytes]):
        self.answer = answer
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        buf = bytearray()
        try:
            while True:
                req = read_request(conn, buf)
                if req is None:
                    return
                conn.sendall(self.answer(*req))
                if req[2].get("connection", "").lower() == "close":
                    return
        except (OSError, ValueError) as exc:
            if not isinstance(exc, (ConnectionError, ssl.SSLEOFError)):
                print(f"replay server: {exc}", file=sys.stderr)
        finally:
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class Recorder:
    """The recording proxy: forwards to the upstream (the simulator) and keeps the first answer of
    each request; counts the traffic of the case named by ``label``."""

    def __init__(self, upstream: tuple[str, int], ca_pem: Path, cert: Path, key: Path):
        self.upstream, self.ca = upstream, ssl.create_default_context(cafile=str(ca_pem))
        self.answers: dict[Key, bytes] = {}
        self.differed: dict[str, int] = defaultdict(int)  # same request, other answer than the first
        self.traffic: dict[str, Traffic] = defaultdict(Traffic)
        self.label = "setup"
        self.local = threading.local()
        self.server = TlsServer(cert, key, self._forward)
        self.port = self.server.port

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPSConnection(*self.upstream, context=self.ca, timeout=600)
        return conn

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        sent = {k: v for k, v in headers.items() if k in ("cookie", "soapaction", "content-type")}
        started = time.perf_counter()
        conn = self._connection()
        try:
            conn.request(method, path, body if method == "POST" else None, sent)
            resp = conn.getresponse()
            elapsed = time.perf_counter() - started  # to the answer's headers: the server's work, not our read
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.local.conn = None
            conn.close()
            raise
        kept = [(k, v) for k, v in resp.getheaders() if k.title() in KEPT_HEADERS]
        raw = response_bytes(resp.status, resp.reason, kept, data)
        key = (method, path, keyed(body))
        name = soap_method(body) if method == "POST" else f"GET {path}"
        if key not in self.answers:
            self.answers[key] = raw
        elif self.answers[key] != raw:
            self.differed[name] += 1
        self.traffic[self.label].add(name, len(body), len(data), elapsed)
        return raw

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the login body holds a password
        with os.fdopen(fd, "wb") as f:
            pickle.dump(self.answers, f, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        self.server.close()


def serve(recording: Path, cert: Path, key: Path) -> None:
    """The replay server's process: answers from the recording until stdin closes."""
    with open(recording, "rb") as f:
        answers: dict[Key, bytes] = pickle.load(f)  # our own file, written by Recorder.save
    missed: list[str] = []

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        found = answers.get((method, path, keyed(body)))
        if found is None:
            missed.append(f"{method} {path} {soap_method(body)}")
            return response_bytes(404, "Not Recorded", [("Content-Type", "text/plain")],
                                  f"not recorded: {missed[-1]}".encode())
        return found

    server = TlsServer(cert, key, answer)
    print(json.dumps({"port": server.port, "pid": os.getpid(), "answers": len(answers)}), flush=True)
    sys.stdin.read()
    server.close()
    if missed:
        print(f"replay server: {len(missed)} requests were not recorded, first: {missed[0]}", file=sys.stderr)
        sys.exit(3)


class Replay:
    """``serve`` in its own process; ``server`` is host:port, ``proc.pid`` its CPU to measure."""

    def __init__(self, recording: Path, cert: Path, key: Path):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, __file__, "serve", "--recording", str(recording),
                                      "--cert", str(cert), "--key", str(key)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"replay server exited with {self.proc.wait()}")
        info = json.loads(line)
        self.port, self.answers = info["port"], info["answers"]
        self.server = f"127.0.0.1:{self.port}"

    def close(self) -> int:
        """Stop the server; its exit status (3: a request was not in the recording)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                return self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="replay a recording on 127.0.0.1 (prints {port, pid}; stops at stdin EOF)")
    s.add_argument("--recording", type=Path, required=True)
    s.add_argument("--cert", type=Path, required=True)
    s.add_argument("--key", type=Path, required=True)
    args = ap.parse_args()
    serve(args.recording, args.cert, args.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
