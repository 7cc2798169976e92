# install_packages MANAGER NAME_OR_FILE...: install with the guest's package manager.
# Files (absolute paths, uploaded by the controller) install locally: air-gapped guests.
# NAMES (space separated) are the package names rollback would remove.
mgr=$1
names=$2
shift 2
[ $# -gt 0 ] || die "install_packages: nothing to install"
[ -z "$GP_ROOT" ] || die "install_packages cannot run under a test root"
mkdir -p "$GP_LOG"
log="$GP_LOG/$GP_RUN-packages.log"
case $mgr in
    apt-get)
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1 ||
            { apt-get update -q >>"$log" 2>&1 && apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; } ;;
    dpkg) dpkg -i "$@" >"$log" 2>&1 ;;
    dnf) dnf install -y "$@" >"$log" 2>&1 ;;
    yum) yum install -y "$@" >"$log" 2>&1 ;;
    zypper) zypper --non-interactive install "$@" >"$log" 2>&1 ;;
    rpm) rpm -U --replacepkgs "$@" >"$log" 2>&1 ;;
    pacman)
        case $1 in
            /*) pacman -U --noconfirm --needed "$@" >"$log" 2>&1 ;;
            *) pacman -S --noconfirm --needed "$@" >"$log" 2>&1 ;;
        esac ;;
    *) die "unsupported package manager $mgr" ;;
esac
rc=$?
[ "$rc" -eq 0 ] || { tail -n 15 "$log" >&2; die "$mgr could not install $* (exit $rc; log ${log#"$GP_ROOT"})"; }
journal "\"action\":\"package\",\"manager\":\"$(jesc "$mgr")\",\"installed\":\"$(jesc "$names")\""
echo "installed $*"
