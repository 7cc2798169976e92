# guestprep step library: prepended to every step script (POSIX sh, dash/busybox safe).
# Positional parameters: ROOT RUN OP, then the step's own. ROOT is "" on a real guest
# (a directory only in tests). Parameters arrive as data, never as shell text.
set -u
umask 077
LC_ALL=C
export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH
# A dropped connection must not kill a step half-way: finish, leave the guest consistent.
trap '' HUP PIPE

GP_ROOT=$1
GP_RUN=$2
GP_OP=$3
shift 3
# Under a root prefix (tests only) the tree's own tools come first, as they would in a chroot.
[ -n "$GP_ROOT" ] && PATH="$GP_ROOT/usr/sbin:$GP_ROOT/usr/bin:$PATH"
GP_STATE="$GP_ROOT/var/lib/guestprep"
GP_JOURNAL="$GP_STATE/journal.json"
GP_BACKUP="$GP_STATE/backup/$GP_RUN"
GP_LOG="$GP_STATE/log"

die() {
    printf 'guestprep: %s\n' "$*" >&2
    exit 1
}

sha() {
    if [ -f "$1" ]; then sha256sum "$1" | cut -d' ' -f1; else echo absent; fi
}

# JSON string body: escape \ and ", drop control characters.
jesc() {
    printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

# Append one entry to the journal (a JSON array), atomically: copy, extend, rename.
journal() {
    mkdir -p "$GP_STATE" || die "cannot create $GP_STATE"
    tmp="$GP_JOURNAL.tmp.$$"
    entry=$(printf '{"ts":"%s","run":"%s","op":"%s",%s}' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(jesc "$GP_RUN")" "$(jesc "$GP_OP")" "$1")
    if [ -s "$GP_JOURNAL" ]; then
        { sed '$d' "$GP_JOURNAL" && printf ',\n%s\n]\n' "$entry"; } >"$tmp"
    else
        printf '[\n%s\n]\n' "$entry" >"$tmp"
    fi || die "cannot write the journal $GP_JOURNAL"
    mv -f "$tmp" "$GP_JOURNAL" || die "cannot write the journal $GP_JOURNAL"
}

# Back up a guest path once per run and journal it (existed or not, so rollback can
# restore or remove it). The copy lands under a temporary name first: no half backup.
backup() {
    p=$1
    src="$GP_ROOT$p"
    dst="$GP_BACKUP$p"
    [ -e "$dst" ] || [ -e "$dst.absent" ] && return 0
    mkdir -p "${dst%/*}" || die "cannot create the backup directory for $p"
    if [ -e "$src" ]; then
        cp -p "$src" "$dst.tmp" && mv -f "$dst.tmp" "$dst" || die "cannot back up $p"
        journal "\"action\":\"backup\",\"path\":\"$(jesc "$p")\",\"backup\":\"$(jesc "${dst#"$GP_ROOT"}")\",\"existed\":true,\"sha256\":\"$(sha "$src")\""
    else
        : >"$dst.absent" || die "cannot record the absence of $p"
        journal "\"action\":\"backup\",\"path\":\"$(jesc "$p")\",\"existed\":false"
    fi
}
