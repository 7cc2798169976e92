# delete_file PATH: back up PATH, then remove it.
p=$1
[ -e "$GP_ROOT$p" ] || { echo "absent $p"; exit 0; }
backup "$p"
rm -f "$GP_ROOT$p" || die "cannot remove $p"
journal "\"action\":\"delete\",\"path\":\"$(jesc "$p")\""
echo "removed $p"
