#!/usr/bin/env bash
# Create (or reuse) the peer's virtualenv at benches/peer/.venv with duckdb and requests.
# Idempotent: an existing venv that already imports both modules is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import duckdb, requests' 2>/dev/null; then
    echo "peer venv ready: $venv"
    exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install --quiet duckdb requests
"$venv/bin/python" -c 'import duckdb, requests; print("peer venv ready:", duckdb.__version__, requests.__version__)'
