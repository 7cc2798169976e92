# restore: stdin lines "restore<TAB>PATH<TAB>BACKUP" | "remove<TAB>PATH" | "disable<TAB>UNIT"
# | "purge<TAB>MANAGER<TAB>PACKAGES", applied in order (the controller sends them newest first).
set -f  # package names are split on blanks, never globbed
tab=$(printf '\t')
failed=0
while IFS="$tab" read -r what a b; do
    case $what in
        restore)
            if [ -f "$GP_ROOT$b" ]; then
                cp -p "$GP_ROOT$b" "$GP_ROOT$a.guestprep-restore" && mv -f "$GP_ROOT$a.guestprep-restore" "$GP_ROOT$a" &&
                    echo "restored $a" || { echo "FAILED restore $a" >&2; failed=1; }
            else
                echo "FAILED restore $a: backup $b is missing" >&2
                failed=1
            fi ;;
        remove) rm -f "$GP_ROOT$a" && echo "removed $a" ;;
        disable)
            if [ -z "$GP_ROOT" ]; then systemctl disable "$a" >/dev/null 2>&1; systemctl daemon-reload >/dev/null 2>&1; fi
            echo "disabled $a" ;;
        purge)
            [ -z "$GP_ROOT" ] || continue
            case $a in
                apt-get|dpkg) DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $b >/dev/null 2>&1 || dpkg -r $b >/dev/null 2>&1 ;;
                dnf|yum) "$a" remove -y $b >/dev/null 2>&1 ;;
                zypper) zypper --non-interactive remove $b >/dev/null 2>&1 ;;
                rpm) rpm -e $b >/dev/null 2>&1 ;;
                pacman) pacman -R --noconfirm $b >/dev/null 2>&1 ;;
            esac && echo "removed packages $b" || { echo "FAILED to remove packages $b" >&2; failed=1; } ;;
    esac
done
journal "\"action\":\"rollback\",\"failed\":$( [ "$failed" = 0 ] && echo false || echo true )"
exit "$failed"
