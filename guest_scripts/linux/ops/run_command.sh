# run_command BACKUP_PATH... -- ARGV...: back up the files the command rewrites, run it.
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    backup "$1"
    shift
done
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || die "run_command: no command"
mkdir -p "$GP_LOG"
log="$GP_LOG/$GP_RUN-$(basename "$1").log"
"$@" >"$log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { tail -n 20 "$log" >&2; die "$1 failed (exit $rc); log: ${log#"$GP_ROOT"}"; }
journal "\"action\":\"run\",\"argv0\":\"$(jesc "$1")\""
echo "ran $1"
