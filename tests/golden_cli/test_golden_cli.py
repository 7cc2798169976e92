"""What a user sees from the CLI, recorded: help texts, `checks list`, a preflight of this machine
and a prepare plan over SSH. A refactoring that moves code must leave every file here unchanged.

Run with GUESTPREP_UPDATE_GOLDEN=1 to rewrite the files after a change that is meant to be
visible; review the diff like code. Values that differ between runs (times, durations, run ids,
free space, the sshd port, temporary paths) are replaced by placeholders, nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.golden_cli.golden_support import GOLDEN, compare, guestprep, json_text, normalise

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- help texts


def command_paths() -> list[str]:
    """Every command and subcommand, as 'vm coexist attach' ('' is the top level)."""
    recorded = GOLDEN / "commands.txt"
    return recorded.read_text().splitlines() if recorded.is_file() else _tree()


def _tree() -> list[str]:
    import typer.main

    from guestprep.cli import app

    def walk(cmd, path):
        yield " ".join(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_the_command_tree_is_the_recorded_one():
    """No command appears, disappears or moves in the listing unnoticed."""
    compare("commands.txt", "\n".join(_tree()) + "\n")


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: p.replace(" ", "-") or "guestprep")
def test_help_text(path):
    res = guestprep(*path.split(), "--help")
    assert res.returncode == 0, res.stderr
    compare(f"help/{path.replace(' ', '-') or 'guestprep'}.txt", res.stdout)


def test_version():
    res = guestprep("--version")
    compare("version.txt", f"rc={res.returncode}\n{res.stdout}{res.stderr}")


# --------------------------------------------------------------------------- checks


def test_checks_list():
    res = guestprep("checks", "list")
    assert res.returncode == 0, res.stderr
    compare("checks-list.txt", res.stdout)


def test_checks_list_json_and_show():
    compare("checks-list.json", guestprep("checks", "list", "--json").stdout)
    compare("checks-show-LNX-INITRAMFS-VIRTIO.json", guestprep("checks", "show", "lnx-initramfs-virtio", "--json").stdout)
    compare("checks-show-LNX-INITRAMFS-VIRTIO.txt", guestprep("checks", "show", "lnx-initramfs-virtio").stdout)


# --------------------------------------------------------------------------- preflight and prepare

def test_preflight_of_this_machine(tmp_path):
    res = guestprep("preflight", "--local", "--format", "json", "--out", "reports", cwd=tmp_path)
    seconds = re.compile(r"\d+\.\d+s\b")
    compare("preflight-local.out.txt", f"rc={res.returncode}\n--- stdout\n{normalise(res.stdout)}"
                                       f"--- stderr\n{seconds.sub('<s>', normalise(res.stderr))}")
    compare("preflight-local.report.json", json_text(json.loads((tmp_path / "reports" / "report.json").read_text())))


def test_preflight_usage_errors(tmp_path):
    cases = [("preflight",), ("preflight", "--local", "--fail-on", "never"), ("preflight", "--local", "--phase", "x"),
             ("preflight", "--local", "web01"), ("prepare",), ("rollback", "-i", "nowhere.yaml"),
             ("facts",), ("checks", "show", "NO-SUCH-CHECK"), ("checks", "list", "--os", "windwos"),
             ("nonsense",)]
    out = []
    for args in cases:
        res = guestprep(*args, cwd=tmp_path)
        out.append(f"$ guestprep {' '.join(args)}\nrc={res.returncode}\n{res.stdout}{res.stderr}")
    compare("usage-errors.txt", "\n".join(out))


def test_prepare_plan_over_ssh(sshd, ssh_inventory, tmp_path):
    inv = ssh_inventory(2)
    literals = dict(tmp=str(tmp_path), port=str(sshd.port), sshd=str(sshd.workdir))
    args = ("prepare", "-i", str(inv), "--known-hosts", str(sshd.known_hosts), "--parallel", "1")
    text = guestprep(*args)
    compare("prepare-plan-ssh.txt", f"rc={text.returncode}\n--- stdout\n{normalise(text.stdout, **literals)}"
                                    f"--- stderr\n{normalise(text.stderr, **literals)}")
    js = guestprep(*args, "--json", "--json-out", str(tmp_path / "plan.json"))
    assert js.returncode == text.returncode, js.stderr
    compare("prepare-plan-ssh.json", json_text(json.loads(js.stdout), **literals))
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(js.stdout)
    compare("prepare-plan-ssh.json-stderr.txt", normalise(js.stderr, **literals))


def test_rollback_over_ssh_with_nothing_journaled(sshd, ssh_inventory, tmp_path):
    """Rollback on a guest that was never prepared here: nothing to restore (read-only)."""
    if Path("/var/lib/guestprep/journal.json").exists():
        pytest.fail("this machine has a guestprep journal: the golden rollback output assumes none")
    inv = ssh_inventory(1)
    literals = dict(tmp=str(tmp_path), port=str(sshd.port), sshd=str(sshd.workdir))
    res = guestprep("rollback", "guest000", "-i", str(inv), "--known-hosts", str(sshd.known_hosts), "--json")
    compare("rollback-nothing-ssh.json", f"rc={res.returncode}\n" + json_text(json.loads(res.stdout), **literals)
            + normalise(res.stderr, **literals))
