# read_state PATH...: what prepare needs beyond the collector's facts, read-only.
# One record per line: "file<TAB>PATH<TAB>BASE64" | "absent<TAB>PATH" | "writable<TAB>DIR<TAB>0|1".
for p in "$@"; do
    f="$GP_ROOT$p"
    if [ -f "$f" ] && [ -r "$f" ]; then
        printf 'file\t%s\t%s\n' "$p" "$(base64 <"$f" | tr -d '\n')"
    elif [ -d "$f" ]; then
        # access(2) reports EROFS for a read-only mount, even for root
        w=0
        [ -w "$f" ] && w=1
        printf 'dir\t%s\t%s\n' "$p" "$w"
    else
        printf 'absent\t%s\n' "$p"
    fi
done
