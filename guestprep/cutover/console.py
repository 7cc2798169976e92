"""The copy's serial console, read on its Proxmox node: what `qm terminal` reads.

A VM with ``serial0: socket`` has its first serial port on the node at
``<qemu_run_dir>/<vmid>.serial0`` (a UNIX socket, one reader at a time; what the guest writes while
nobody reads is lost, so the watch starts right after the VM does). A small stdlib-only script runs
over the node's SSH session, reads until the guest shows a login prompt, an emergency shell or
a kernel panic, or the time is up, and prints one JSON line: the verdict and the console's tail.

The verdict is evidence, not the proof: a cutover is verified by the guest agent; the console
only lets a failed boot fail at once (an emergency shell never starts the agent) and shows why.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

SERIAL_SOCKET = "{run_dir}/{vmid}.serial0"

READER = r'''
import json, re, socket, sys, time
path, limit = sys.argv[1], float(sys.argv[2])
LOGIN = re.compile(rb"\S+ login: ?$", re.M)
BAD = re.compile(rb"Entering emergency mode|You are in emergency mode|Give root password for maintenance|"
                 rb"Dropping to a shell|Cannot open access to console|Kernel panic|Could not boot|"
                 rb"emergency shell", re.I)
end = time.monotonic() + limit
buf, s = b"", None
while s is None and time.monotonic() < end:
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(path)
    except OSError:
        s = None; time.sleep(0.5)
verdict, quiet_until = "timeout", None
if s is None:
    verdict = "no-console"
while s is not None and time.monotonic() < end:
    s.settimeout(1.0)
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        chunk = b""
        if quiet_until is not None and time.monotonic() > quiet_until:
            break
        continue
    if not chunk:
        verdict = verdict if verdict != "timeout" else "closed"
        break
    buf = (buf + chunk)[-65536:]
    if quiet_until is not None:
        quiet_until = time.monotonic() + 3.0
        continue
    if BAD.search(buf):
        verdict, quiet_until = "emergency", time.monotonic() + 3.0   # the reason follows the verdict line
        end = min(end, time.monotonic() + 30.0)
    elif LOGIN.search(buf):
        verdict = "login"
        break
text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.decode("utf-8", "replace").replace("\r", ""))
m = BAD.search(buf) or LOGIN.search(buf)
print(json.dumps({"verdict": verdict, "line": m.group(0).decode("utf-8", "replace") if m else None,
                  "tail": "\n".join(text.splitlines()[-25:])}))
'''


@dataclass
class ConsoleWatch:
    """Watch one VM's serial console in a thread; ``result`` once it has a verdict."""

    node: Any                 # NodeLink
    socket_path: str
    limit: float
    result: dict[str, Any] | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> "ConsoleWatch":
        self._thread = threading.Thread(target=self._run, name=f"console {self.socket_path}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            r = self.node.run([self.node.spec.python, "-c", READER, self.socket_path, f"{self.limit:.0f}"],
                              timeout=self.limit + 60)
            out = r.stdout.decode(errors="replace").strip().splitlines()
            self.result = json.loads(out[-1]) if r.rc == 0 and out else \
                {"verdict": "error", "tail": r.stderr.decode(errors="replace")[-500:]}
        except Exception as exc:  # the console is evidence: its failure never fails the step by itself
            self.result = {"verdict": "error", "tail": f"{type(exc).__name__}: {exc}"}

    def wait(self, timeout: float) -> dict[str, Any] | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    @property
    def failed_boot(self) -> bool:
        return bool(self.result and self.result.get("verdict") == "emergency")
