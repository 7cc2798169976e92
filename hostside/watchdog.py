"""Tie a command on the node to the SSH channel that started it, one per target at a time.

    python3 -m hostside.watchdog --lock FILE [--wait S] [--done-if FILE] [--stdin-line] -- CMD...

(run from the zipapp: ``env PYTHONPATH=guestprep-host.pyz python3 -m hostside.watchdog ...``)

A command run over SSH without a terminal gets no SIGHUP when its client dies: sshd closes its
pipes and nothing more, so a conversion went on alone after the controller was killed, and the
controller's resume met its half-written target. Here the controller keeps the channel's stdin
open for as long as it wants the command; its end of file (the controller exited, was killed, or
the connection dropped) stops the command: SIGTERM to it (guestprep-host then stops qemu-img and
removes the partial target), SIGKILL to what is left of its process group after a grace period.

``--lock`` (flock, dropped by the kernel when this process dies) lets one command per target
run: a second one waits up to ``--wait`` seconds for the first to finish and clean up, then, with
``--done-if``, does nothing when that file exists (the first one finished the work).
``--stdin-line`` passes the first line of stdin (a session cookie) to the command's stdin and
nowhere else. Exit: the command's, 75 when the lock stayed taken, 2 on bad usage.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

EXIT_LOCKED = 75     # EX_TEMPFAIL: another run of this target still holds the lock
GRACE = 60.0         # seconds the command has to clean up after SIGTERM


def _read_line(fd: int) -> bytes:
    """The first line of ``fd``, byte by byte: nothing after it is consumed (it is the tether)."""
    out = bytearray()
    while not out.endswith(b"\n"):
        b = os.read(fd, 1)
        if not b:
            break
        out += b
    return bytes(out)


def _lock(path: str, wait: float) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                print(f"guestprep-host watchdog: another run of this target (pid {holder}) still holds "
                      f"{path} after {wait:g}s", file=sys.stderr)
                return None
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    """A process of the group still runs. Zombies do not count: an orphan that has exited waits for
    whoever reaps orphans on this node, and must not hold the grace period open (Linux /proc; where
    it cannot be read, any member counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()   # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _stop_group(pgid: int, deadline: float) -> None:
    """SIGTERM the command's group, let it clean up until ``deadline``, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="guestprep-host-watchdog")
    p.add_argument("--lock", required=True)
    p.add_argument("--wait", type=float, default=3600.0)
    p.add_argument("--done-if")
    p.add_argument("--stdin-line", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("no command after --")
    line = _read_line(0) if args.stdin_line else b""
    lock = _lock(args.lock, args.wait)
    if lock is None:
        return EXIT_LOCKED
    if args.done_if and os.path.exists(args.done_if):   # the run before us finished it
        return 0
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if args.stdin_line else subprocess.DEVNULL,
                            start_new_session=True)   # its own group: qemu-img is stopped with it
    if args.stdin_line:
        try:
            proc.stdin.write(line)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    line = b""
    stopper: list[threading.Thread] = []
    stopper_lock = threading.RLock()   # re-entrant: a second signal may run this handler inside the first

    def stop() -> None:   # once, whoever asks first (the tether, a signal)
        with stopper_lock:
            if stopper:
                return
            t = threading.Thread(target=_stop_group, args=(proc.pid, time.monotonic() + GRACE), daemon=True)
            stopper.append(t)
            t.start()

    def tether() -> None:
        while True:
            try:
                if not os.read(0, 4096):
                    break
            except OSError:
                break
        if proc.poll() is None:
            stop()

    threading.Thread(target=tether, daemon=True).start()

    def on_signal(signum, frame) -> None:   # stopped ourselves: the command stops too (and cleans up)
        stop()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    rc = proc.wait()
    if stopper:   # the rest of the group (a wrapper's child) still has its grace to clean up in
        stopper[0].join()
    if _group_alive(proc.pid):   # nothing of the command outlives it
        os.killpg(proc.pid, signal.SIGKILL)
    if stopper:
        print("guestprep-host watchdog: the controller's channel closed: the command was stopped",
              file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
