#!/bin/sh
# Install the Debian packages listed in $1 that are missing. As root: apt-get.
# Otherwise: print exactly what is missing and how to install it, and fail.
set -eu
list="${1:?usage: ensure-system-packages.sh FILE}"
pkgs=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list" | awk '{print $1}')
missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    exit 0
fi
echo "missing Debian packages:$missing" >&2
echo "install them as root:  apt-get install$missing" >&2
exit 2
