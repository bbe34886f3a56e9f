#!/usr/bin/env bash
# Side by side: the Python peer vs ebb, same DuckDB data, same local sink.
#   benches/peer/compare.sh ROWS        (default 100000)
# Uses the release binary ~/.cache/ebb-target/release/ebb (or $EBB_BIN); never builds it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh" >&2
exec "$here/.venv/bin/python" "$here/compare.py" "${1:-100000}"
