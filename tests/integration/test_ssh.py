"""The SSH connector and the collector against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import CollectorError, CommandTimeout, ConnectionFailed, HostKeyError
from guestprep.facts import linux
from guestprep.models import Credentials, Guest, Transport
from tests.support.sshd import TEST_USER, keygen

pytestmark = pytest.mark.integration


def guest_for(sshd, **creds) -> Guest:
    c = dict(user="root", key_file=str(sshd.user_key), use_agent=False)
    c.update(creds)
    return Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH, credentials=Credentials(**c))


def opts(sshd, **kw) -> ConnectOptions:
    return ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=kw.pop("connect_timeout", 10), **kw)


def test_collector_over_ssh_one_round_trip(sshd):
    with open_connector(guest_for(sshd), opts(sshd)) as conn:
        facts = linux.collect(conn, timeout=120)
    assert facts.hostname == socket.gethostname()
    assert facts.is_root
    assert facts.mount("/").free_bytes > 0


def test_unknown_host_key_is_refused_by_default(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match="host key unknown: .*not in .*--accept-new-host-keys"):
        open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(empty)))
    assert not empty.exists() or empty.read_text() == ""


def test_accept_new_host_keys_saves_the_key(sshd, tmp_path):
    kh = tmp_path / "kh"
    with open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh), accept_new_host_keys=True)) as conn:
        assert conn.run(["true"]).rc == 0
    assert sshd.host_pubkey.split()[1] in kh.read_text()
    # the saved key is now trusted without the flag
    with open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh))) as conn:
        assert conn.run(["true"]).rc == 0


def test_changed_host_key_is_always_refused(sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    pub = (tmp_path / "other_host_key.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    with pytest.raises(HostKeyError, match="CHANGED"):
        open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh), accept_new_host_keys=True))
    assert pub[1] in kh.read_text() and sshd.host_pubkey.split()[1] not in kh.read_text()


def test_wrong_key_is_refused(sshd, tmp_path):
    wrong = keygen(tmp_path / "wrong_key")
    with pytest.raises(ConnectionFailed, match="authentication failed: the server refused user 'root'") as exc:
        open_connector(guest_for(sshd, key_file=str(wrong)), opts(sshd))
    assert f"offered key {wrong}" in exc.value.message


def test_no_key_to_offer_says_so_not_no_existing_session(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(ConnectionFailed, match="authentication failed") as exc:
        open_connector(guest_for(sshd, key_file=None), opts(sshd))
    assert "No existing session" not in exc.value.message and "Errno" not in exc.value.message


def test_password_auth_and_wrong_password(sshd, monkeypatch):
    if not sshd.password_user:
        pytest.skip("password tests need root to create the test user")
    monkeypatch.setenv("GP_TEST_PW", sshd.password)
    g = guest_for(sshd, user=TEST_USER, key_file=None, password_env="GP_TEST_PW")
    with open_connector(g, opts(sshd)) as conn:
        assert conn.run(["id", "-un"]).text().strip() == TEST_USER
    monkeypatch.setenv("GP_TEST_PW", "not-the-password")
    with pytest.raises(ConnectionFailed, match="authentication failed") as exc:
        open_connector(g, opts(sshd))
    assert "not-the-password" not in str(exc.value)


def test_missing_password_env_is_a_config_error(sshd, monkeypatch):
    from guestprep.errors import ConfigError

    monkeypatch.delenv("GP_UNSET_PW", raising=False)
    with pytest.raises(ConfigError, match="GP_UNSET_PW"):
        open_connector(guest_for(sshd, password_env="GP_UNSET_PW"), opts(sshd))


def test_sudo_reads_the_password_on_stdin_never_argv(sshd, monkeypatch):
    if not sshd.password_user or not Path("/usr/bin/sudo").exists():
        pytest.skip("needs root (test user) and sudo")
    Path("/etc/sudoers.d").mkdir(exist_ok=True)
    rule = Path("/etc/sudoers.d/guestprep-test")
    rule.write_text(f"{TEST_USER} ALL=(ALL:ALL) ALL\n")
    os.chmod(rule, 0o440)
    try:
        monkeypatch.setenv("GP_TEST_PW", sshd.password)
        g = guest_for(sshd, user=TEST_USER, key_file=None, password_env="GP_TEST_PW", sudo_password_env="GP_TEST_PW")
        with open_connector(g, opts(sshd)) as conn:
            assert conn.run(["id", "-u"], sudo=True).text().strip() == "0"
            # stdin data reaches the command; the password line was consumed by sudo
            echoed = conn.run(["cat"], stdin=b"payload\n", sudo=True)
            assert echoed.stdout == b"payload\n"
            # the password is in no process's argv while a privileged command runs
            ps = conn.run(["sh", "-c", "ps -eo args"], sudo=True).text()
            assert sshd.password not in ps
    finally:
        rule.unlink()


def test_command_timeout(sshd):
    with open_connector(guest_for(sshd), opts(sshd)) as conn:
        start = time.monotonic()
        with pytest.raises(CommandTimeout):
            conn.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 10


def test_connect_timeout_on_a_silent_server():
    """A TCP peer that accepts and never speaks SSH: a clear timeout, not a hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    g = Guest(name="silent", address="127.0.0.1", port=srv.getsockname()[1], credentials=Credentials(user="root"))
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match=r"timed out after 1.5 s waiting for the SSH greeting") as exc:
        open_connector(g, ConnectOptions(connect_timeout=1.5))
    assert time.monotonic() - start < 15
    assert exc.value.detail.startswith("SSHException")  # paramiko's own words stay as evidence
    srv.close()


def test_connection_refused_is_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = Guest(name="down", address="127.0.0.1", port=port, credentials=Credentials(user="root"))
    with pytest.raises(ConnectionFailed, match="connection refused: nothing listens on 127.0.0.1") as exc:
        open_connector(g, ConnectOptions(connect_timeout=2))
    assert "Errno None" not in exc.value.message and "Unable to connect" in exc.value.detail


def test_arguments_with_shell_metacharacters_stay_data(sshd, tmp_path):
    marker = tmp_path / "pwned"
    nasty = [f"a; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"'\"; touch {marker}; echo \"'",
             f"line1\ntouch {marker}"]
    with open_connector(guest_for(sshd), opts(sshd)) as conn:
        for arg in nasty:
            res = conn.run(["printf", "%s", arg])
            assert res.stdout.decode() == arg
    assert not marker.exists()


def test_fifty_megabytes_of_output_is_refused_cleanly(sshd):
    with open_connector(guest_for(sshd), opts(sshd)) as conn:
        res = conn.run(["sh", "-c", "head -c 52428800 /dev/zero | tr '\\0' x"], timeout=120)
    assert len(res.stdout) == 50 * 1024 * 1024
    with pytest.raises(CollectorError, match="limit"):
        linux.decode_output(res.stdout, res.rc, res.stderr)


def test_put_and_get(sshd, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("hello")
    remote = f"/tmp/guestprep-test-{os.getpid()}"
    with open_connector(guest_for(sshd), opts(sshd)) as conn:
        conn.put(str(src), remote, mode=0o600)
        conn.get(remote, str(tmp_path / "back.txt"))
        conn.run(["rm", "-f", remote])
    assert (tmp_path / "back.txt").read_text() == "hello"


# --------------------------------------------------------------------------- known_hosts markers (issue 13, item 11)

CA_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SK_PUB = ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIJH4zUGbnKk0yVGNHP7"
          "ABJv/aNnmg1fgqYuwL4qVCqF5AAAABHNzaDo=")
OTHER_LINES = ["# fleet keys, reviewed 2024-05", "@cert-authority *.corp.example " + CA_PUB,
               "@revoked * ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7", "bastion.corp.example " + SK_PUB,
               "|1|JfKTdBh7rNbXkVAQCRp4OQoPfmI=|USECr3SWf1JUPsms5AqfD5QfxkM= " + CA_PUB]


def test_accept_new_host_keys_appends_and_keeps_every_other_line(sshd, tmp_path):
    kh = tmp_path / "kh"
    kh.write_text("\n".join(OTHER_LINES))  # no final newline: the new key must still start its own line
    with open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh), accept_new_host_keys=True)) as conn:
        assert conn.run(["true"]).rc == 0  # a @cert-authority line made every guest unreachable before
    lines = kh.read_text().splitlines()
    assert lines[:len(OTHER_LINES)] == OTHER_LINES  # comments, markers, sk- and hashed entries untouched
    assert lines[len(OTHER_LINES):] == [f"[{sshd.host}]:{sshd.port} {sshd.host_pubkey.split()[0]} "
                                        f"{sshd.host_pubkey.split()[1]}"]
    with open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh))) as conn:
        assert conn.run(["true"]).rc == 0
    assert len(kh.read_text().splitlines()) == len(OTHER_LINES) + 1  # known now: nothing appended


def test_a_revoked_host_key_is_refused_even_when_also_listed(sshd, tmp_path):
    kh = tmp_path / "kh"
    kh.write_text(f"{sshd.known_hosts.read_text().strip()}\n@revoked * {sshd.host_pubkey.split()[0]} "
                  f"{sshd.host_pubkey.split()[1]}\n")
    before = kh.read_text()
    with pytest.raises(HostKeyError, match=r"@revoked in .*kh:2"):
        open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh)))
    kh.write_text(f"@revoked * {sshd.host_pubkey.split()[0]} {sshd.host_pubkey.split()[1]}\n")
    with pytest.raises(HostKeyError, match=r"@revoked in .*kh:1"):
        open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh), accept_new_host_keys=True))
    assert kh.read_text().count("\n") == 1  # not saved
    assert before  # (the first file is unchanged by the refusal)


def test_a_cert_authority_for_the_host_is_reported_precisely(sshd, tmp_path):
    kh = tmp_path / "kh"
    kh.write_text(f"# ca\n@cert-authority {sshd.host},[{sshd.host}]:* {CA_PUB}\n")
    for accept in (False, True):
        with pytest.raises(HostKeyError, match=r"kh:2 trusts a @cert-authority .*cannot verify SSH host certificates"):
            open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh), accept_new_host_keys=accept))
    assert kh.read_text().count("\n") == 2


def test_a_cert_authority_for_other_hosts_does_not_hide_plain_entries(sshd, tmp_path):
    kh = tmp_path / "kh"
    kh.write_text(f"@cert-authority *.corp.example {CA_PUB}\n{sshd.known_hosts.read_text().strip()}\n")
    with open_connector(guest_for(sshd), ConnectOptions(known_hosts=str(kh))) as conn:
        assert conn.run(["true"]).rc == 0
