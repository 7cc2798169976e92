"""guestprep-host: runs on the Proxmox node (standard library + qemu tools).

    guestprep-host inspect SRC [--json]
    guestprep-host audit SRC [--json] [--fail-on warning]
    guestprep-host convert SRC --to qcow2|zvol|lvmthin|raw --dest DEST [--json]
    guestprep-host convert --handoff VM.handoff.json [--disk LABEL] [--dry-run] [--json]
    guestprep-host reclaim --manifest M [--json]

Exit codes: 0 ok, 1 findings / verification failure, 2 bad input or usage,
3 a tool is missing or failed, 130 interrupted (partial target removed).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys

from guestprep.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, ConfigError, GuestprepError
from hostside import image, privdir, qemu

# audit/convert/storage (and guestprep.models) are imported by the command that
# needs them: start-up time is part of every conversion the benchmark measures
# (issue 17: fixed cost <= 50 ms; tests/hostside/test_startup_imports.py guards it).
SEVERITIES = ("info", "warning", "blocker")
DEFAULT_STORAGE_CFG = "/etc/pve/storage.cfg"


def _columns() -> int:
    """shutil.get_terminal_size().columns without shutil (and the bz2/lzma/fnmatch it imports):
    COLUMNS, else the terminal on stdout, else 80."""
    try:
        cols = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        cols = 0
    if cols <= 0:
        try:
            cols = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            cols = 0
    return cols if cols > 0 else 80


class _Formatter(argparse.HelpFormatter):
    """argparse's own, given its width: argparse builds a formatter for every add_argument (to check
    the metavar), and without a width each one imported shutil for the terminal's size."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width=None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        # main() prints "guestprep-host: error: ..." already: name the subcommand only, never the program twice
        raise ConfigError(message, self.prog.removeprefix("guestprep-host").strip() or None)


def _source_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("src", nargs="?" if optional else None,
                   help="image file, .vmdk descriptor, block device or https:// URL")
    p.add_argument("--format", choices=image.FORMATS, help="skip format detection")
    p.add_argument("--chain", action="store_true",
                   help="accept a snapshot chain and read it through its top image")
    cookie = p.add_mutually_exclusive_group()
    cookie.add_argument("--cookie-env", metavar="VAR",
                        help="environment variable holding the HTTPS session cookie")
    cookie.add_argument("--cookie-stdin", action="store_true",
                        help="read the HTTPS session cookie from the first line of stdin")
    p.add_argument("--insecure", action="store_true",
                   help="HTTPS: do not verify the server certificate")
    p.add_argument(image.RAW_OVERRIDE_FLAG, dest="raw_despite_vmdk_header",
                   action="store_true",
                   help="with --format raw: read a file that starts with VMware metadata "
                        "(KDMV, COWD, seSparse, a descriptor) as raw bytes anyway")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="guestprep-host",
                     description="Inspect, audit and convert VMware disks on a Proxmox node.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="what the image is: format, extents, chain, sizes")
    _source_args(p)
    p = sub.add_parser("audit", help="offline partition/alignment/firmware audit")
    _source_args(p)
    p.add_argument("--guest", help="name used in findings (default: the source)")
    p.add_argument("--fail-on", choices=SEVERITIES, default="warning",
                   help="exit 1 when a failing finding is at or above this severity")
    p = sub.add_parser("convert", help="convert into a new qcow2/zvol/LVM-thin/raw target, "
                                       "one disk or every disk of a hand-off document")
    _source_args(p, optional=True)
    p.add_argument("--to", choices=["qcow2", "raw", "zvol", "lvmthin"],
                   help="target kind (with --handoff: qcow2/raw override the format)")
    p.add_argument("--dest",
                   help="file path, block device, pool/dataset/name (zvol) or "
                        "vg/thinpool/name (lvmthin)")
    p.add_argument("--handoff", metavar="FILE",
                   help="read disks, sources, target volumes and format from a "
                        "`guestprep handoff` document (flags below override it)")
    p.add_argument("--disk", action="append", default=[], metavar="LABEL",
                   help="with --handoff: convert only this disk (repeatable)")
    p.add_argument("--source", action="append", default=[], metavar="LABEL=SRC",
                   help="with --handoff: read this disk from SRC instead (repeatable)")
    p.add_argument("--storage", metavar="ID",
                   help="with --handoff: put the volumes on this Proxmox storage instead")
    p.add_argument("--storage-cfg", metavar="FILE", default=None,
                   help=f"with --handoff: Proxmox storage definitions "
                        f"(default {DEFAULT_STORAGE_CFG})")
    p.add_argument("--dry-run", action="store_true",
                   help="inspect, audit and check every disk and print the plan; create nothing")
    p.add_argument("--compress", action="store_true", help="qcow2 compression (-c)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the verification (and the content digest it computes)")
    p.add_argument("--allow-qcow2-on-zfs", action="store_true",
                   help="accept qcow2 on a ZFS-backed directory (double copy-on-write)")
    p.add_argument("--volblocksize", default=None,
                   help="zvol volblocksize (default: the storage's blocksize, else 16k)")
    p.add_argument("--overwrite-device", action="store_true",
                   help="raw onto a block device that already holds data")
    p.add_argument("--manifest", help="manifest path (default: beside a file target; "
                                      "in --manifest-dir for zvol/LVM-thin/device targets)")
    p.add_argument("--manifest-dir", metavar="DIR", default=None,
                   help="where manifests of zvol/LVM-thin/device targets go (default "
                        "$GUESTPREP_HOST_MANIFEST_DIR, else /var/lib/guestprep/manifests)")
    p.add_argument("--progress", choices=["auto", "bar", "json", "none"], default="auto",
                   help="progress on stderr: a bar, JSON lines, or nothing")
    p.add_argument("--stall-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="stop (and clean up) when qemu-img makes no progress this long")
    p.add_argument("--discard-stale-partial", action="store_true",
                   help="remove first a partial target that a killed run of this same "
                        "conversion left (proved by the claim file beside the manifest)")
    p = sub.add_parser("reclaim", help="remove the partial target a killed conversion left, "
                                       "as its claim file beside the manifest names it")
    p.add_argument("--manifest", required=True, help="the killed conversion's manifest path")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def _cookie(args: argparse.Namespace) -> str | None:
    if args.cookie_env:
        value = os.environ.get(args.cookie_env)
        if not value:
            raise ConfigError(f"environment variable {args.cookie_env} is not set or empty",
                              "--cookie-env")
        return value
    if args.cookie_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise ConfigError("no cookie on stdin", "--cookie-stdin")
        return value
    return None


def _source_options(args: argparse.Namespace) -> image.SourceOptions:
    if args.raw_despite_vmdk_header and args.format != "raw":
        raise ConfigError(f"{image.RAW_OVERRIDE_FLAG} only applies with --format raw",
                          image.RAW_OVERRIDE_FLAG)
    return image.SourceOptions(format=args.format, chain=args.chain, cookie=_cookie(args),
                               insecure=args.insecure,
                               raw_despite_vmdk_header=args.raw_despite_vmdk_header)


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _print_json(doc: dict) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cmd_inspect(args, secrets) -> int:
    src = image.inspect(args.src, _source_options(args), secrets)
    if args.json:
        _print_json(src.to_dict())
        return EXIT_OK
    print(f"{src.spec.label}: {src.format}, virtual {_human_size(src.virtual_size)}, "
          f"allocated {_human_size(src.actual_size)}")
    if src.vmdk:
        d = src.vmdk.descriptor
        print(f"  createType {d.create_type}, CID {d.cid:08x}, parentCID {d.parent_cid:08x}")
        for e, path in zip(d.extents, src.vmdk.extent_paths):
            print(f"  extent {e.access} {e.type} {_human_size(e.size)} {path or '(zero)'}")
    if len(src.chain) > 1:
        print("  chain: " + " -> ".join(src.chain))
    for note in src.notes:
        print(f"  note: {note}")
    return EXIT_OK


def cmd_audit(args, secrets) -> int:
    from guestprep.models import Severity, Status
    from hostside import audit as audit_mod

    src = image.inspect(args.src, _source_options(args), secrets)
    result = audit_mod.audit(src, args.guest)
    threshold = Severity(args.fail_on).rank
    failing = [f for f in result.findings if f.is_open and f.severity.rank >= threshold]
    if args.json:
        _print_json(result.to_dict())
    else:
        t = result.table
        print(f"{src.spec.label}: {t.scheme.upper()} partition table, firmware {result.firmware}")
        for p in t.partitions:
            print(f"  {p.number:>3} {p.kind:<8} start {p.start:>10} size "
                  f"{_human_size(p.sectors * 512):>10}  {p.type_name:<22} "
                  f"{p.filesystem or '-':<8} 4K:{'ok' if p.start % 8 == 0 else 'NO'} "
                  f"1M:{'ok' if p.start % 2048 == 0 else 'no'}")
        for f in result.findings:
            if f.status is not Status.PASS:
                print(f"  [{f.severity.value}] {f.check_id} {f.resource}: {f.message}")
    return EXIT_FINDINGS if failing else EXIT_OK


class _Progress:
    """Progress on stderr: a bar, or JSON lines (`--progress json`).

    Events: {"event": "phase", "phase": "inspect"} as each phase starts (inspect, audit,
    space_check, convert, verify, manifest), {"event": "progress", "phase": "convert",
    "percent": 12.5} during the copy, then exactly one of {"event": "done", "timings":
    {...}} (manifest written), {"event": "failed", "phase": ..., "exit_code": N, "error":
    "..."} or {"event": "interrupted", "phase": ...}. With --handoff each carries "disk".
    """

    def __init__(self, mode: str, disk: str | None = None, on_phase=None):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "none"
        self.mode = mode
        self.disk = disk   # named in JSON events when a run converts several disks
        self.current: str | None = None
        self.finished = False
        self.on_phase = on_phase     # tells the run which disk is in progress

    def _event(self, doc: dict) -> None:
        if self.disk is not None:
            doc["disk"] = self.disk
        sys.stderr.write(json.dumps(doc) + "\n")
        sys.stderr.flush()

    def _line(self, text: str) -> None:
        name = f"{self.disk}: " if self.disk else ""
        sys.stderr.write(f"\r\x1b[K{name}{text}")
        sys.stderr.flush()

    def phase(self, name: str) -> None:
        self.current = name
        if self.on_phase is not None:
            self.on_phase(self)
        if self.mode == "json":
            self._event({"event": "phase", "phase": name})
        elif self.mode == "bar":
            self._line(f"{name.replace('_', ' ')}...")

    def __call__(self, pct: float) -> None:
        if self.mode == "json":
            self._event({"event": "progress", "phase": "convert", "percent": pct})
        elif self.mode == "bar":
            filled = int(pct / 100 * 40)
            self._line(f"convert [{'#' * filled}{'.' * (40 - filled)}] {pct:6.2f}%")

    def done(self, timings: dict | None = None) -> None:
        self.finished = True
        if self.mode == "bar":
            self._line("done\n")
        elif self.mode == "json":
            self._event({"event": "done", "timings": timings or {}})

    def failed(self, exc: GuestprepError) -> None:
        self.finished = True
        if self.mode == "bar":
            sys.stderr.write("\n")
        elif self.mode == "json":
            self._event({"event": "failed", "phase": self.current, "exit_code": exc.exit_code,
                         "error": str(exc)})

    def interrupted(self) -> None:
        self.finished = True
        if self.mode == "bar":
            sys.stderr.write("\n")
        elif self.mode == "json":
            self._event({"event": "interrupted", "phase": self.current})


def _parse_sources(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        label, sep, src = v.partition("=")
        if not sep or not label or not src:
            raise ConfigError(f"expected LABEL=SRC, got {v!r}", "--source")
        out[label] = src
    return out


def _convert_jobs(args):
    """(jobs, hand-off document or None) from the command line."""
    from hostside.jobs import DiskJob

    handoff_only = [f for f, v in (("--disk", args.disk), ("--source", args.source),
                                   ("--storage", args.storage), ("--storage-cfg", args.storage_cfg))
                    if v]
    if args.handoff is None:
        if handoff_only:
            verb = "apply" if len(handoff_only) > 1 else "applies"
            raise ConfigError(f"{', '.join(handoff_only)} only {verb} with --handoff", "arguments")
        missing = [n for n, v in (("SRC", args.src), ("--to", args.to), ("--dest", args.dest))
                   if not v]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (or give --handoff FILE)", "convert")
        job = DiskJob(args.src, "arguments", source=args.src, source_from="SRC",
                              kind=args.to, dest=args.dest)
        return [job], None
    if args.src:
        raise ConfigError("give either SRC or --handoff (use --source LABEL=SRC to override "
                          "one disk's source)", "arguments")
    if args.dest and not args.to:
        raise ConfigError("--dest needs --to (what kind of target it is)", "--dest")
    if args.to in ("zvol", "lvmthin") and not args.dest:
        raise ConfigError(f"--to {args.to} needs --dest with --handoff (otherwise the "
                          "storage decides the kind)", "--to")
    from hostside import handoff
    doc = handoff.load(args.handoff)
    ov = handoff.Overrides(disks=args.disk, sources=_parse_sources(args.source),
                           storage=args.storage,
                           fmt=args.to if args.to in ("qcow2", "raw") and not args.dest else None,
                           kind=args.to if args.dest else None, dest=args.dest)
    cfg_path = args.storage_cfg or DEFAULT_STORAGE_CFG
    cache: dict = {}

    def storages():
        from hostside import pvestorage
        if "cfg" not in cache:
            cache["cfg"] = pvestorage.load_storage_cfg(cfg_path)
        return cache["cfg"]

    jobs = handoff.plan(doc, ov, storages, cfg_path)
    if args.manifest and sum(1 for j in jobs if not j.skipped) > 1:
        raise ConfigError("one manifest path for several disks: drop --manifest (each "
                          "manifest goes beside its target) or choose one --disk", "--manifest")
    return jobs, doc


def _audit_line(audit: dict) -> str:
    if not audit.get("performed"):
        return f"audit: not performed ({audit.get('error')})"
    failing = audit.get("failing") or []
    table = audit.get("table") or {}
    head = f"audit: {str(table.get('scheme', '?')).upper()}, firmware {audit.get('firmware')}"
    if not failing:
        return head + ", no findings"
    return head + "; " + "; ".join(f"[{f['severity']}] {f['check_id']} {f['resource']}".rstrip()
                                   for f in failing)


def _print_plan(doc, jobs, readies) -> None:
    by_label = {r.job.label: r for r in readies}
    if doc is not None:
        print(f"hand-off {doc.path} (sha256 {doc.sha256[:16]}): VM {doc.vm.name}, "
              f"uuid {doc.vm.uuid_bios or '?'}")
    for job in jobs:
        if job.skipped:
            print(f"  {job.label}: skipped: {job.skipped}")
            continue
        r = by_label[job.label]
        src = r.source
        print(f"  {job.label}: {src.spec.label} ({src.format}, virtual "
              f"{_human_size(src.virtual_size)}) [from {job.source_from}]")
        into = f"{job.volid} = " if job.volid else ""
        print(f"    -> {into}{r.target.kind} {r.target.label} ({r.target.fmt})")
        if r.prep is not None:
            print(f"    needs ~{_human_size(int(r.prep.measured['required']))}; manifest "
                  f"{r.prep.manifest_path}")
        for n in r.notes:
            print(f"    note: {n}")
        print(f"    {_audit_line(r.audit)}")
        for w in job.warnings + r.target.warnings:
            print(f"    warning: {w}")


def cmd_convert(args, secrets) -> int:
    from hostside import convert as convert_mod
    from hostside.errors import Interrupted

    reporters: dict[str, _Progress] = {}
    active: dict[str, _Progress] = {}     # "disk": the one whose phase started last
    several = args.handoff is not None

    def reporter_for(job) -> _Progress:
        if job.label not in reporters:
            reporters[job.label] = _Progress(args.progress, job.label if several else None,
                                             on_phase=lambda r: active.update(disk=r))
        return reporters[job.label]

    def last_open() -> _Progress:
        if "disk" in active and not active["disk"].finished:
            return active["disk"]
        return _Progress(args.progress)   # before any disk started: an event all the same

    try:
        with convert_mod.stop_signals():
            return _convert(args, secrets, reporter_for)
    except (KeyboardInterrupt, convert_mod.Terminated):
        last_open().interrupted()
        raise Interrupted("interrupted outside a conversion: no partial target was left",
                          None) from None
    except Interrupted:
        last_open().interrupted()
        raise
    except GuestprepError as exc:
        last_open().failed(exc)
        raise


def _convert(args, secrets, reporter_for) -> int:
    from hostside import batch
    from hostside import convert as convert_mod

    if args.stall_timeout <= 0:
        raise ConfigError("must be a positive number of seconds", "--stall-timeout")
    jobs, doc = _convert_jobs(args)
    qemu.tool("qemu-img")   # said first (exit 3): no source kind converts without it
    opts = convert_mod.ConvertOptions(compress=args.compress, verify=not args.no_verify,
                                      manifest=args.manifest, manifest_dir=args.manifest_dir,
                                      stall_timeout=args.stall_timeout,
                                      discard_stale_partial=args.discard_stale_partial)
    topts = batch.TargetOptions(allow_qcow2_on_zfs=args.allow_qcow2_on_zfs,
                                volblocksize=args.volblocksize,
                                overwrite_device=args.overwrite_device)
    made_dirs: list[str] = []
    converted = False
    try:
        readies = batch.prepare_all(jobs, doc, _source_options(args), secrets, topts, opts,
                                    dry_run=args.dry_run, made_dirs=made_dirs,
                                    reporter_for=reporter_for)
        if args.dry_run:
            if args.json:
                _print_json({"dry_run": True, "handoff": doc.identity() if doc else None,
                             "disks": [r.plan_dict() for r in readies]
                             + [j.to_dict() for j in jobs if j.skipped]})
            else:
                _print_plan(doc, jobs, readies)
                print("dry run: nothing was created")
            return EXIT_OK
        manifests = batch.execute_all(readies, doc, reporter_for)
        converted = True
    finally:
        if not converted:
            batch.remove_dirs(made_dirs)
    if args.json:
        if doc is None:
            _print_json(manifests[0])
        else:
            _print_json({"handoff": doc.identity(), "disks": manifests,
                         "skipped": [j.to_dict() for j in jobs if j.skipped]})
        return EXIT_OK
    for r, manifest in zip(readies, manifests):
        for w in r.job.warnings + r.target.warnings:
            print(f"warning: {r.job.label}: {w}" if doc else f"warning: {w}", file=sys.stderr)
        ver = manifest["verification"]
        into = f" = {r.job.volid}" if r.job.volid else ""
        print(f"{r.source.spec.label} -> {r.target.path}{into} ({r.target.kind}): "
              f"{manifest['timings'].get('convert_s')}s, "
              f"verified: {'yes' if ver.get('ok') else 'skipped'}")
        print(f"  phases: {r.clock.summary()}")
        print(f"  {_audit_line(manifest['audit'])}")
        print(f"manifest: {manifest['manifest_path']}")
    for j in jobs:
        if j.skipped:
            print(f"{j.label}: skipped: {j.skipped}")
    return EXIT_OK


def cmd_reclaim(args, secrets) -> int:
    from hostside.reclaim import reclaim

    result = reclaim(args.manifest)
    if args.json:
        _print_json(result)
    elif result["claim"] is None:
        print(f"no claim beside {args.manifest}: nothing to remove"
              + (" (the conversion finished: its manifest is there)" if result["manifest_exists"] else ""))
    elif result["removed"]:
        print(f"removed {result['partial']} (left by {result['left_by']}); claim removed")
    elif result["partial"] is None:
        print(f"empty claim {result['claim']} removed (its run created nothing, or the node "
              "crashed before the claim was written out)")
    else:
        print(f"claim {result['claim']} removed; its partial target was already gone")
    return EXIT_OK


COMMANDS = {"inspect": cmd_inspect, "audit": cmd_audit, "convert": cmd_convert,
            "reclaim": cmd_reclaim}
# What each command imports (lazily, above): loaded before it runs, so that run() can keep
# the cyclic garbage collector off while modules load and on while the command works.
COMMAND_MODULES = {"inspect": (), "audit": ("guestprep.models", "hostside.audit"),
                   "convert": ("hostside.batch", "hostside.convert", "hostside.jobs"),
                   "reclaim": ("hostside.reclaim",)}
_gc_paused = False


def _modules_loaded(command: str) -> None:
    global _gc_paused
    for name in COMMAND_MODULES[command]:
        importlib.import_module(name)
    if _gc_paused:
        _gc_paused = False
        gc.freeze()     # what is loaded now lives until exit: no collection walks it again
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    secrets = None
    try:
        args = build_parser().parse_args(argv)
        _modules_loaded(args.command)
        secrets = privdir.PrivateDir()
        return COMMANDS[args.command](args, secrets)
    except GuestprepError as exc:
        print(f"guestprep-host: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help, or argparse's own exit
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("guestprep-host: interrupted", file=sys.stderr)
        return 130
    finally:
        if secrets is not None:
            secrets.close()


def run(gc_paused: bool = False) -> None:
    """The program's entry point (zipapp, console script, `python -m hostside.cli`).

    Start-up and exit are part of every conversion (issue 17), and CPython's cyclic garbage
    collector would walk the freshly imported modules again and again: no collection runs
    while they load; once the command's modules are in they are frozen (gc.freeze: never
    walked again) and collection resumes for what the command allocates; the collections
    at exit skip what is alive when main() returned. Objects are still freed by reference
    counting and atexit handlers run; everything hostside writes is closed by its `with`
    block before main() returns. (~6 M of ~240 M instructions of an empty conversion.)
    """
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    elif gc_paused:      # the zipapp's __main__ paused it before importing this module
        _gc_paused = True
    try:
        code = main()
    finally:
        if _gc_paused:
            _gc_paused = False
            gc.enable()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
