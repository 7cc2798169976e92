"""verify's post-phase preflight waits for the guest's SSH service to greet before judging it: the
guest agent of a freshly started copy answers before sshd listens (the booting lab saw sshd start
minutes after the agent under load, and a good cutover was rolled back as 'unreachable'). Real
sockets on loopback; the greeting is RFC 4253 section 4.2's 'SSH-' line."""

from __future__ import annotations

import socket
import threading
import time

from guestprep.cutover.postflight import wait_for_service
from guestprep.models import Guest, Transport


def _guest(port: int, transport: Transport = Transport.SSH) -> Guest:
    return Guest(name="web01", address="127.0.0.1", transport=transport, port=port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_later(port: int, after: float, greeting: bytes | None, stop: threading.Event) -> threading.Thread:
    def serve():
        time.sleep(after)
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen()
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    continue
                with conn:
                    if greeting:
                        conn.sendall(greeting)
                    stop.wait(0.5)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_waits_until_sshd_listens_and_greets():
    port, stop = _free_port(), threading.Event()
    _serve_later(port, 2.0, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", stop)
    try:
        out = wait_for_service(_guest(port), 30, every=0.5)
    finally:
        stop.set()
    assert out["ready"] and out["port"] == port
    assert out["attempts"] > 1 and out["waited_s"] >= 1.5


def test_a_listener_that_never_greets_is_not_ssh():
    port, stop = _free_port(), threading.Event()
    _serve_later(port, 0.0, None, stop)
    try:
        out = wait_for_service(_guest(port), 3, every=0.5)
    finally:
        stop.set()
    assert not out["ready"] and out["ports"] == [port]


def test_nothing_listening_gives_up_at_the_timeout():
    started = time.monotonic()
    out = wait_for_service(_guest(_free_port()), 2, every=0.5)
    assert not out["ready"] and out["attempts"] >= 2
    assert time.monotonic() - started < 8


def test_winrm_needs_only_the_port_to_accept():
    port, stop = _free_port(), threading.Event()
    _serve_later(port, 1.0, None, stop)
    try:
        out = wait_for_service(_guest(port, Transport.WINRM), 20, every=0.5)
    finally:
        stop.set()
    assert out["ready"] and out["port"] == port
