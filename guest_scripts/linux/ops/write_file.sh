# write_file PATH MODE BASE_SHA256: replace PATH with stdin, after backing it up.
# BASE_SHA256 is what the plan saw ("absent", a digest, or "any"): if the file changed
# since the plan, refuse rather than overwrite someone else's edit.
p=$1
mode=$2
base=$3
target="$GP_ROOT$p"
mkdir -p "${target%/*}" || die "cannot create the directory of $p"
new="$target.guestprep-new"
rm -f "$new"
if [ -f "$target" ]; then cp -p "$target" "$new" || die "cannot stage $p"; fi
cat >"$new" || { rm -f "$new"; die "cannot write $p"; }
cur=$(sha "$target")
if [ "$cur" = "$(sha "$new")" ]; then
    rm -f "$new"
    echo "unchanged $p"
    exit 0
fi
if [ "$base" != any ] && [ "$base" != "$cur" ]; then
    rm -f "$new"
    die "$p changed since the plan was made (planned on $base, now $cur): re-run prepare"
fi
[ -f "$target" ] || chmod "$mode" "$new"
backup "$p"
mv -f "$new" "$target" || die "cannot replace $p"
journal "\"action\":\"write\",\"path\":\"$(jesc "$p")\",\"sha256\":\"$(sha "$target")\""
echo "wrote $p"
