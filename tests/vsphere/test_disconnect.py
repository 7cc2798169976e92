"""vCenter going away mid-run: a TCP relay between pyVmomi and the simulator is cut, either
between calls or in the middle of the inventory's response. The error is clear, no traceback
material leaks, and nothing is half-written."""

from __future__ import annotations

import socket
import threading

import pytest

from guestprep.errors import ConnectionFailed
from guestprep.vsphere.actions import find_vm
from guestprep.vsphere.client import connect
from guestprep.vsphere.export import write
from guestprep.vsphere.inventory import fetch_all

pytestmark = pytest.mark.integration


class Relay:
    """Forwards 127.0.0.1:port to the simulator; ``cut()`` drops everything, ``cut_after`` limits
    the bytes sent back to the client from the next response on."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.budget: int | None = None
        self.sent_back = 0  # bytes relayed from the simulator to the client
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, limited):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limited:
                    with self.lock:
                        self.sent_back += len(data)
                if limited and self.budget is not None:
                    with self.lock:
                        allowed, self.budget = data[:self.budget], max(0, self.budget - len(data))
                    if allowed:
                        dst.sendall(allowed)
                    if self.budget == 0:
                        self.cut()
                        return
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; close alone does not
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass


def _session(vcsim, relay):
    return connect(f"127.0.0.1:{relay.port}", vcsim.user, vcsim.password, ca_bundle=str(vcsim.certs.ca_pem),
                   timeout=10)


def test_vcenter_gone_between_calls(vcsim):
    relay = Relay(vcsim.port)
    s = _session(vcsim, relay)
    assert fetch_all(s)  # works through the relay
    relay.cut()
    with pytest.raises(ConnectionFailed, match="connection lost|stopped answering|refused"):
        fetch_all(s, where="vsphere relay")
    with pytest.raises(ConnectionFailed):
        find_vm(s, "DC0_H0_VM2")


def test_vcenter_drops_in_the_middle_of_the_inventory(vcsim, tmp_path):
    # measure how many bytes one inventory read returns, then cut 2000 bytes before its end:
    # inside the RetrievePropertiesEx response, the last and largest of the run
    probe = Relay(vcsim.port)
    s = _session(vcsim, probe)
    start = probe.sent_back
    fetch_all(s)
    total = probe.sent_back - start
    probe.cut()
    assert total > 20000
    relay = Relay(vcsim.port)
    s = _session(vcsim, relay)
    relay.budget = total - 2000
    with pytest.raises(ConnectionFailed) as exc:
        vms = fetch_all(s, where="vsphere relay")
        write(vms, tmp_path / "fleet.yaml", tmp_path / "facts", server="relay")
    assert "vsphere relay" in str(exc.value)
    print(exc.value)
    assert not (tmp_path / "fleet.yaml").exists() and not (tmp_path / "facts").exists()
