# rebuild_initramfs GENERATOR KVER IMAGE MODULES: build a new image next to the old one,
# verify it with the generator's list tool, back up the old one, then rename into place.
# A failed or interrupted rebuild leaves the old image untouched: never a kernel without
# a working initramfs.
gen=$1
kver=$2
image=$3
mods=$4
img="$GP_ROOT$image"
dir=${img%/*}
[ -d "$dir" ] || die "$dir does not exist"
probe="$dir/.guestprep-write-test.$$"
( : >"$probe" ) 2>/dev/null || die "${dir#"$GP_ROOT"} is not writable (read-only /boot?): $kver untouched"
rm -f "$probe"
mkdir -p "$GP_LOG" || die "cannot create $GP_LOG"
log="$GP_LOG/$GP_RUN-initramfs-$kver.log"
new="$img.guestprep-new"
rm -f "$new"
case $gen in
    dracut) dracut -f "$new" "$kver" ;;
    initramfs-tools) mkinitramfs -o "$new" "$kver" ;;
    mkinitcpio) mkinitcpio -k "$kver" -g "$new" ;;
    *) die "unsupported initramfs generator $gen" ;;
esac >"$log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] || [ ! -s "$new" ]; then
    rm -f "$new"
    tail -n 15 "$log" >&2
    die "$gen failed for $kver (exit $rc; log ${log#"$GP_ROOT"}); the old image is untouched"
fi
case $gen in
    dracut) lister=lsinitrd ;;
    initramfs-tools) lister=lsinitramfs ;;
    mkinitcpio) lister=lsinitcpio ;;
esac
if ! "$lister" "$new" >"$log.list" 2>>"$log"; then
    rm -f "$new"
    die "$lister cannot read the new image for $kver; the old image is untouched"
fi
for m in $(printf '%s' "$mods" | tr ',' ' '); do
    if ! grep -Eq "(^|/)$m\.ko(\.(xz|zst|gz))?\$" "$log.list"; then
        rm -f "$new"
        die "$m is missing from the rebuilt image for $kver; the old image is untouched"
    fi
done
backup "$image"
sync
mv -f "$new" "$img" || die "cannot move the new image into place for $kver"
sync
journal "\"action\":\"initramfs\",\"path\":\"$(jesc "$image")\",\"kver\":\"$(jesc "$kver")\",\"generator\":\"$(jesc "$gen")\",\"sha256\":\"$(sha "$img")\""
echo "rebuilt $image"
