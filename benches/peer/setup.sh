#!/usr/bin/env bash
# Create (or reuse) the peer's virtualenv at benches/peer/.venv with duckdb, requests and
# simple-salesforce (the inbound peer's Salesforce client).
# Idempotent: an existing venv that already imports all three modules is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import duckdb, requests, simple_salesforce' 2>/dev/null; then
    echo "peer venv ready: $venv"
    exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install --quiet duckdb requests simple-salesforce==1.12.10
"$venv/bin/python" -c 'import duckdb, requests, simple_salesforce; from importlib.metadata import version; print("peer venv ready: duckdb", duckdb.__version__, "requests", requests.__version__, "simple-salesforce", version("simple-salesforce"))'
