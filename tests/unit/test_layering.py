"""The house plan (shared/DESIGN.md "Layout"), read from the imports: commands on top, then the
runner, the stages, the adapters, and the ground floor. Imports run downward only.

Every import counts, also the ones inside functions: a lazy import is still a dependency.
An exception must be listed below with why; the list is meant to shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "guestprep"

ENTRY_POINT = "guestprep.cli"          # the console script: starts guestprep.commands
COMMANDS = "guestprep.commands"
STAGES = ("guestprep.inventory", "guestprep.facts", "guestprep.checks", "guestprep.operations",
          "guestprep.report", "guestprep.handoff", "guestprep.finalize", "guestprep.preflight", "guestprep.cutover")
ADAPTERS = ("guestprep.connectors", "guestprep.vsphere", "guestprep.proxmox")

# (importer, imported): an adapter that still reaches a stage, and why. Empty is the goal.
ADAPTER_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every guestprep module this file imports (``from guestprep.x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("guestprep"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("guestprep"):
                continue
            found.add(base)
            for a in node.names:
                candidate = f"{base}.{a.name}"
                if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or \
                        (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").is_dir():
                    found.add(candidate)
    return found


def all_imports() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(module: str, prefixes) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_nothing_below_the_commands_imports_them():
    offenders = sorted(f"{m} imports {i}" for m, deps in all_imports().items()
                       if not within(m, COMMANDS) and m != ENTRY_POINT
                       for i in deps if within(i, COMMANDS))
    assert not offenders, offenders


def test_no_stage_and_no_adapter_imports_the_entry_point():
    offenders = sorted(f"{m} imports {i}" for m, deps in all_imports().items()
                       if not within(m, COMMANDS) for i in deps if i == ENTRY_POINT)
    assert not offenders, offenders


def test_adapters_import_no_stage():
    offenders = sorted(f"{m} imports {i}" for m, deps in all_imports().items() if within(m, ADAPTERS)
                       for i in deps if within(i, STAGES) and (m, i) not in ADAPTER_EXCEPTIONS)
    assert not offenders, offenders


def test_listed_exceptions_still_exist():
    """An exception that was fixed leaves the list, so the list says what is left."""
    imports = all_imports()
    stale = [pair for pair in ADAPTER_EXCEPTIONS if pair[1] not in imports.get(pair[0], set())]
    assert not stale, f"no longer imported, remove from ADAPTER_EXCEPTIONS: {stale}"


def test_no_stage_imports_the_runner_except_through_its_fleet_runs():
    """The runner sits above the stages: only the fleet runs use it (preflight, prepare and
    rollback in operations.runs, and the cutover, which runs its waves through it)."""
    users = ("guestprep.preflight", "guestprep.operations.runs", "guestprep.cutover")
    offenders = sorted(f"{m} imports guestprep.runner" for m, deps in all_imports().items()
                       if "guestprep.runner" in deps and not within(m, COMMANDS) and not within(m, users))
    assert not offenders, offenders


def _private_names_used(path: Path, adapter_modules: set[str]) -> set[str]:
    """``from adapter import _x`` and ``adapter_module._x`` in one file (dunders are public)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    private = lambda name: name.startswith("_") and not name.endswith("__")  # noqa: E731
    aliases: dict[str, str] = {}  # local name -> adapter module it is bound to
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and within(node.module, ADAPTERS):
            for a in node.names:
                if private(a.name):
                    used.add(f"{node.module}.{a.name}")
                if f"{node.module}.{a.name}" in adapter_modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if within(a.name, ADAPTERS) and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and private(node.attr):
            used.add(f"{aliases[node.value.id]}.{node.attr}")
    return used


def test_no_stage_or_command_uses_an_adapters_private_names():
    """An adapter's underscore names are its own; whoever needs one needs it public."""
    adapter_modules = {m for m in all_imports() if within(m, ADAPTERS)}
    offenders = sorted(f"{module_name(p)} uses {name}" for p in sorted(PACKAGE.rglob("*.py"))
                       if not within(module_name(p), ADAPTERS)
                       for name in _private_names_used(p, adapter_modules))
    assert not offenders, offenders


def test_vm_operations_are_stages_and_vsphere_is_their_adapter():
    """vsphere/coexist.py holds client calls only; the operation (plan, Applied) is operations/vm's."""
    imports = all_imports()
    assert not any(within(i, "guestprep.operations") for i in imports["guestprep.vsphere.coexist"])
    assert "guestprep.vsphere.coexist" in imports["guestprep.operations.vm.coexistence"]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_graph() -> dict[str, set[str]]:
    """Imports between the commands, the runner, each stage and each adapter (a package is one node)."""
    nodes = (COMMANDS, ENTRY_POINT, "guestprep.runner", *STAGES, *ADAPTERS)

    def node(m: str) -> str | None:
        return next((n for n in nodes if within(m, n)), None)

    graph: dict[str, set[str]] = {}
    for m, deps in all_imports().items():
        src = node(m)
        if src is None:
            continue
        graph.setdefault(src, set())
        for d in deps:
            if (m, d) in ADAPTER_EXCEPTIONS:  # listed above with why; it would close checks <-> vsphere
                continue
            dst = node(d)
            if dst is not None and dst != src:
                graph[src].add(dst)
    return graph


def test_no_circle_between_any_modules():
    """Not only around the commands: no two modules anywhere in guestprep import each other, even indirectly."""
    assert not _cycles(all_imports()), _cycles(all_imports())


def test_no_circle_between_commands_runner_and_adapters():
    """The circles issue 14 named (operations/cli <-> cli, vsphere <-> operations) stay broken."""
    graph = _package_graph()
    involved = {COMMANDS, ENTRY_POINT, "guestprep.runner", *ADAPTERS}
    circles = [c for c in _cycles(graph) if involved & set(c)]
    assert not circles, circles
