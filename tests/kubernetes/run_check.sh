#!/bin/sh
# run_check.sh PYTHON3 MANIFEST_DIR SANDPOOLD: runs check_manifests.py, or
# exits 77 (skipped) where the Python modules it needs are not installed.
python3=$1
shift
for module in yaml kubernetes; do
  if ! "$python3" -c "import $module" 2>/dev/null; then
    echo "skipped: $python3 has no module '$module' (scripts/setup.sh installs it)"
    exit 77
  fi
done
exec "$python3" "$(dirname "$0")/check_manifests.py" "$@"
