"""Fixtures: one govmomi vCenter simulator over TLS per session (built once, cached).

The simulator starts with 4 VMs per resource pool: DC0_C0_RP0_VM0..3 in cluster DC0_C0
and DC0_H0_VM0..3 on the standalone host DC0_H0. Each test module shapes its own VMs
(documented where used) so tests do not depend on each other's order.
"""

from __future__ import annotations

import secrets as pysecrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulator as simlib  # noqa: E402
from vsphere_support import reconfig, set_guest  # noqa: E402,F401  (kept importable for fixtures)


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    try:
        return simlib.build()
    except simlib.SimulatorUnavailable as exc:
        pytest.skip(f"vCenter simulator unavailable: {exc}")


@pytest.fixture(scope="session")
def vcsim(vcsim_binary, tmp_path_factory):
    certs = simlib.make_certs(tmp_path_factory.mktemp("vcsim-certs"))
    sim = simlib.Simulator(vcsim_binary, certs, "pw-" + pysecrets.token_hex(8), vms_per_pool=4)
    yield sim
    sim.close()


@pytest.fixture(scope="session")
def session(vcsim):

    s = vcsim.connect()
    yield s
    s.close()


@pytest.fixture(scope="session")
def cli_env(vcsim):
    import os

    return dict(os.environ, GUESTPREP_VSPHERE_PASSWORD=vcsim.password)


@pytest.fixture
def run_cli(vcsim, cli_env, tmp_path):
    """Run the real ``guestprep`` entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    exe = Path(sys.executable).with_name("guestprep")

    def run(*args, env=None, input=None, connect=True):
        conn = ["--server", vcsim.server, "--user", vcsim.user, "--ca-bundle", str(vcsim.certs.ca_pem)] if connect else []
        return subprocess.run([str(exe), *args, *conn], env=env or cli_env, input=input, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    return run
