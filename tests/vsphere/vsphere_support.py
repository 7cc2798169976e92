"""Helpers shared by the vSphere tests (a uniquely named module: `from conftest import` is ambiguous
when several test directories have a conftest.py)."""

from __future__ import annotations


def reconfig(session, vm, spec) -> None:
    from guestprep.vsphere.actions import run_task

    run_task(session, f"test reconfig {vm.name}", lambda: vm.ReconfigVM_Task(spec=spec))


def set_guest(session, vm, **values) -> None:
    """vcsim's SET.guest.* extraConfig keys set guest facts (IP, Tools status) via the real API."""
    from pyVmomi import vim

    reconfig(session, vm, vim.vm.ConfigSpec(extraConfig=[
        vim.option.OptionValue(key=f"SET.guest.{k}", value=v) for k, v in values.items()]))
