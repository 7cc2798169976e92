"""Every byte a command prints arrives, even when sshd reports the exit status before the last data.

OpenSSH sends exit-status as soon as the child is reaped, which can overtake output still
queued in its pipe; a reader that stops at "exit status ready and nothing buffered" loses the
tail under load (seen in CI as a `read_state` answer missing its last records).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.connectors.ssh import EOF_GRACE
from guestprep.models import Credentials, Guest, Transport

pytestmark = pytest.mark.integration

# many small writes, the last ones right before exit: the shape of read_state's output
# (stderr may carry the shell's own "fork: ... temporarily unavailable" retries on a loaded host: only its tail counts)
SCRIPT = 'i=0; while [ $i -lt 3000 ]; do printf "rec\\t%s\\n" "$i"; i=$((i+1)); done; printf "END\\n" >&2; printf "LAST\\n"'


def _guest(sshd) -> Guest:
    return Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH,
                 credentials=Credentials(user="root", key_file=str(sshd.user_key), use_agent=False))


def test_output_tail_is_never_lost_under_concurrency(sshd):
    opts = ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10)

    def one(_: int) -> list:
        with open_connector(_guest(sshd), opts) as conn:
            bad: list = []
            for _ in range(10):
                res = conn.run(["sh", "-c", SCRIPT], timeout=60)
                lines = res.stdout.decode().splitlines()
                if len(lines) != 3001 or lines[-1] != "LAST" or not res.stderr.endswith(b"END\n") or res.rc != 0:
                    bad.append((len(lines), lines[-1:], res.stderr[-8:], res.rc, round(res.duration, 1)))
            return bad

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    lost = [b for r in results for b in r]
    assert lost == [], lost   # (lines, last line, stderr tail, rc, seconds) per incomplete run


def test_background_child_holding_stdout_does_not_hang_the_run(sshd):
    """A daemon started by the command keeps stdout open; the run still ends EOF_GRACE after the exit status."""
    opts = ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10)
    with open_connector(_guest(sshd), opts) as conn:
        res = conn.run(["sh", "-c", "(sleep 60 &) ; echo started"], timeout=50)
    assert res.rc == 0 and res.stdout == b"started\n"
    assert res.duration < EOF_GRACE + 15
