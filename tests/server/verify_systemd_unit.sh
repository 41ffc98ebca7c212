#!/usr/bin/env bash
# Checks server/examples/sandpoold.service with systemd-analyze verify: the
# unit as shipped, with only its ExecStart pointed at the sandpoold just
# built (verify insists that the program exists). Any complaint fails.
#   verify_systemd_unit.sh UNIT SANDPOOLD
set -euo pipefail
unit=$1 sandpoold=$2
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze missing (Debian package systemd): unit not verified"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/sandpoold|$sandpoold|" "$unit" > "$work/sandpoold.service"
grep -q "^ExecStart=$sandpoold " "$work/sandpoold.service"
if ! complaints=$(systemd-analyze verify "$work/sandpoold.service" 2>&1) || [[ -n $complaints ]]; then
  echo "systemd-analyze verify: ${complaints:-failed}"
  exit 1
fi
echo "sandpoold.service: verified"
