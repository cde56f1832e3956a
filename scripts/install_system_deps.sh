#!/usr/bin/env bash
# System packages for the integration tiers (tests/integration, tests/distributed): Debian's Chromium +
# ChromeDriver for the UI checks, PostgreSQL for the metadata-database runs and redis-server as the
# Celery broker of the distributed tier. Idempotent: installs only what is missing.
# Skips (exit 0, saying why) where it cannot install: not root, or no apt-get. The tier then skips the
# parts that need the missing programs and says so in its output.
set -uo pipefail

PACKAGES=(chromium chromium-driver postgresql redis-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_system_deps: already installed: ${PACKAGES[*]}"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: SKIP: apt-get not available; missing: ${missing[*]}"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps: SKIP: not root (uid $(id -u)); missing: ${missing[*]}" \
        "(install them with: sudo apt-get install ${missing[*]})"
    exit 0
fi

started=$(date +%s)
echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A failed update (e.g. one unreachable mirror) is not fatal: the install below says what is missing.
apt-get update -qq || echo "install_system_deps: apt-get update failed; trying the install anyway"
# policy-rc.d 101: Debian's postinst must not start the distribution's own PostgreSQL cluster or Redis;
# the tiers start throwaway ones of their own on free loopback ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
status=$?
[ "$created_policy" -eq 1 ] && rm -f "$policy"
echo "install_system_deps: apt-get install exited $status after $(($(date +%s) - started))s"
if [ $status -ne 0 ]; then
    echo "install_system_deps: SKIP: could not install ${missing[*]}; the tier skips what needs them"
fi
exit 0
