"""What a user sees from the `vm` commands against the simulator, recorded (see tests/golden_cli).

Read-only: plans on DC0_C0_RP0_VM3 (no other test module shapes it), and an --apply that has
nothing to do (power on a running VM), which must print the same and journal nothing.
"""

from __future__ import annotations

import json

import pytest

from tests.golden_cli.golden_support import GOLDEN, compare, guestprep, normalise

pytestmark = pytest.mark.integration

VM = "DC0_C0_RP0_VM3"


def vm_cli(vcsim, tmp_path, *args):
    res = guestprep(*args, "--server", vcsim.server, "--user", vcsim.user, "--ca-bundle", str(vcsim.certs.ca_pem),
                    cwd=tmp_path, GUESTPREP_VSPHERE_PASSWORD=vcsim.password)
    assert vcsim.password not in res.stdout + res.stderr
    return f"$ guestprep {' '.join(args)}\nrc={res.returncode}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}"


@pytest.mark.parametrize("command", [
    ("vm", "coexist", "attach"), ("vm", "coexist", "detach"), ("vm", "power", "off"), ("vm", "power", "on"),
    ("vm", "snapshot"),
], ids=lambda c: "-".join(c[1:]))
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_vm_plan(vcsim, tmp_path, command, as_json):
    out = vm_cli(vcsim, tmp_path, *command, VM, *(["--json"] if as_json else []))
    compare(f"vm/{'-'.join(command[1:])}{'.json' if as_json else ''}.txt", normalise(out, server=vcsim.server),
            GOLDEN)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_vm_apply_with_nothing_to_do_journals_nothing(vcsim, tmp_path, as_json):
    journal = tmp_path / "journal.jsonl"
    out = vm_cli(vcsim, tmp_path, "vm", "power", "on", VM, "--apply", "--journal", str(journal),
                 *(["--json"] if as_json else []))
    compare(f"vm/power-on-apply-unchanged{'.json' if as_json else ''}.txt",
            normalise(out, server=vcsim.server, tmp=str(tmp_path)), GOLDEN)
    assert not journal.exists()


def test_vm_facts(vcsim, tmp_path):
    res = guestprep("vm", "facts", VM, "--server", vcsim.server, "--user", vcsim.user, "--ca-bundle",
                    str(vcsim.certs.ca_pem), cwd=tmp_path, GUESTPREP_VSPHERE_PASSWORD=vcsim.password)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    compare("vm/facts-keys.txt", "\n".join(sorted(doc)) + "\n", GOLDEN)
