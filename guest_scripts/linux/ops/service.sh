# service ACTION UNIT: enable or disable a systemd unit, journaling the previous state.
action=$1
unit=$2
[ -z "$GP_ROOT" ] || { echo "skipped $action $unit under a test root"; exit 0; }
before=$(systemctl is-enabled "$unit" 2>/dev/null)
systemctl daemon-reload >/dev/null 2>&1
case $action in
    enable|disable) systemctl "$action" "$unit" >/dev/null 2>&1 || die "systemctl $action $unit failed" ;;
    *) die "unsupported service action $action" ;;
esac
journal "\"action\":\"service\",\"unit\":\"$(jesc "$unit")\",\"did\":\"$(jesc "$action")\",\"before\":\"$(jesc "$before")\""
echo "$action $unit"
