#!/usr/bin/env python3
"""Side-by-side run of the Python peer and ebb on the same DuckDB data and the same sink.

    compare.py ROWS      (normally via compare.sh, which prepares the venv)

Scenarios, each on identical data for both tools (run peer then ebb per scenario):
  first   - first sync, every row sent
  nochange- second run, nothing changed
  1%      - after UPDATE customers SET segment = 'platinum' WHERE id % 100 = 0

Env: EBB_BIN (default ~/.cache/ebb-target/release/ebb), PEER_CONCURRENCY (4),
     KEEP=1 keeps the work directory, WORKDIR=... chooses it.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
CREATE = """CREATE TABLE customers AS SELECT i AS id, 'First' || i AS first_name, 'Last' || (i % 9973) AS last_name,
    'User' || i || '@Example.com' AS email, ['bronze', 'silver', 'gold'][1 + i % 3] AS segment,
    round((i % 10007) * 1.37, 2)::DECIMAL(12, 2) AS lifetime_value, (i % 101) / 100.0 AS churn,
    TIMESTAMP '2024-01-01' + to_seconds(i) AS updated_at
 FROM range(1, {rows} + 1) AS t(i)"""
CHANGE = "UPDATE customers SET segment = 'platinum' WHERE id % 100 = 0"
# Copied from benches/sync.rs, fn project.
MODEL_YAML = """models:
  - name: customers
    source:
      type: duckdb
      query: SELECT id, first_name, last_name, email, segment, lifetime_value, churn, updated_at FROM customers
    destination:
      type: http
      mode: upsert
      unique_identifier: id
    mappings:
      - source: id
        destination: id
      - source: first_name
        destination: FirstName
      - source: last_name
        destination: LastName
      - source: email
        destination: Email
        transform: lower
      - source: segment
        destination: Segment__c
      - source: lifetime_value
        destination: LTV__c
        transform: round(2)
      - source: churn
        destination: Churn_Risk__c
        transform: scale(0, 1, 0, 100)
      - source: updated_at
        destination: Last_Update__c
"""


def run(cmd):
    """Run cmd; return (stdout, wall secs, peak RSS bytes, exit code, CPU secs)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return out.decode(), wall, ru.ru_maxrss * 1024, p.returncode, ru.ru_utime + ru.ru_stime


def cpu_secs(pid):
    """User + system CPU seconds used so far by process pid (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sink_stats(base, reset=False):
    with urllib.request.urlopen(f"{base}/stats" + ("?reset=1" if reset else "")) as r:
        return json.load(r)


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    conc = int(os.environ.get("PEER_CONCURRENCY", "4"))
    ebb = os.environ.get("EBB_BIN", os.path.expanduser("~/.cache/ebb-target/release/ebb"))
    work = os.environ.get("WORKDIR") or tempfile.mkdtemp(prefix="ebb-peer-")
    os.makedirs(work, exist_ok=True)
    wh = os.path.join(work, "warehouse.duckdb")
    state = os.path.join(work, "peer-state.sqlite")
    proj = os.path.join(work, "ebb")
    for p in (wh, state):
        if os.path.exists(p):
            os.remove(p)
    shutil.rmtree(proj, ignore_errors=True)

    t0 = time.perf_counter()
    con = duckdb.connect(wh)
    con.execute(CREATE.format(rows=rows))
    con.close()
    print(f"warehouse: {rows} rows in {wh} ({time.perf_counter() - t0:.1f}s)", flush=True)

    sink = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py")], stdout=subprocess.PIPE)
    port = int(sink.stdout.readline())
    base = f"http://127.0.0.1:{port}"
    print(f"sink: {base} (pid {sink.pid})", flush=True)

    have_ebb = os.access(ebb, os.X_OK)
    if have_ebb:
        os.makedirs(os.path.join(proj, "models"))
        with open(os.path.join(proj, "ebb.yaml"), "w") as f:
            f.write(f"version: 1\nconnections:\n  warehouse:\n    type: duckdb\n    path: {wh}\n"
                    f"  hook:\n    type: http\n    url: {base}/hook\n    batch_size: 200\n"
                    f"    max_concurrency: 4\n")
        with open(os.path.join(proj, "models/customers.yaml"), "w") as f:
            f.write(MODEL_YAML)
    else:
        print(f"ebb: no executable at {ebb}; skipping ebb (not building it)", flush=True)

    def peer():
        sink_stats(base, reset=True)
        c0 = cpu_secs(sink.pid)
        out, wall, rss, code, cpu = run([sys.executable, os.path.join(HERE, "peer.py"), "--warehouse", wh,
                                    "--sink", f"{base}/hook", "--state", state,
                                    "--concurrency", str(conc)])
        j = json.loads(out.strip().splitlines()[-1])
        s = sink_stats(base)
        return {"secs": j["secs"], "wall": wall, "read": j["read"], "sent": j["sent"],
                "calls": j["calls"], "sink_calls": s["requests"], "sink_bytes": s["bytes"],
                "sink_cpu": cpu_secs(sink.pid) - c0, "rss": rss, "cpu": cpu, "code": code}

    def ebb_run():
        sink_stats(base, reset=True)
        c0 = cpu_secs(sink.pid)
        out, wall, rss, code, cpu = run([ebb, "-C", proj, "run", "customers", "--format", "json"])
        r = json.loads(out)["runs"][0]
        c = r["counts"]
        s = sink_stats(base)
        return {"secs": r["elapsed_ms"] / 1000, "wall": wall, "read": c["read"], "sent": c["sent"],
                "calls": c["api_calls"], "sink_calls": s["requests"], "sink_bytes": s["bytes"],
                "sink_cpu": cpu_secs(sink.pid) - c0, "rss": rss, "cpu": cpu, "code": code,
                "status": r["status"], "timings": r.get("timings_ms")}

    results = []
    try:
        for name in ("first", "nochange", "1%"):
            if name == "1%":
                con = duckdb.connect(wh)
                con.execute(CHANGE)
                con.close()
            p = peer()
            print(f"[{name}] peer {json.dumps(p)}", flush=True)
            e = ebb_run() if have_ebb else None
            if e:
                print(f"[{name}] ebb  {json.dumps(e)}", flush=True)
            results.append((name, p, e))
    finally:
        sink.terminate()
        sink.wait()
        if os.environ.get("KEEP") != "1" and not os.environ.get("WORKDIR"):
            shutil.rmtree(work, ignore_errors=True)

    def rate(n, s):
        return f"{n / s:,.0f}" if s > 0 else "-"

    print(f"\nROWS={rows}  sink=python http.server  batch=200  concurrency=4  (secs = each tool's own"
          f" timer; wall = process incl. startup)")
    hdr = ("scenario", "peer s", "ebb s", "peer/ebb", "peer rows/s", "ebb rows/s",
           "peer calls", "ebb calls", "sent p/e", "wall p/e s", "peak RSS p/e MB",
           "cpu p/e s", "sink MB p/e", "sink cpu p/e s")
    lines = [hdr]
    for name, p, e in results:
        e = e or {}
        es = e.get("secs")
        lines.append((
            name, f"{p['secs']:.3f}", f"{es:.3f}" if e else "-",
            f"{p['secs'] / es:.1f}x" if e and es > 0 else "-",
            rate(p["read"], p["secs"]), rate(e["read"], es) if e else "-",
            f"{p['calls']}", f"{e['calls']}" if e else "-",
            f"{p['sent']}/{e['sent']}" if e else f"{p['sent']}/-",
            f"{p['wall']:.2f}/{e['wall']:.2f}" if e else f"{p['wall']:.2f}/-",
            f"{p['rss'] / 2**20:.0f}/{e['rss'] / 2**20:.0f}" if e else f"{p['rss'] / 2**20:.0f}/-",
            f"{p['cpu']:.2f}/{e['cpu']:.2f}" if e else f"{p['cpu']:.2f}/-",
            f"{p['sink_bytes'] / 1e6:.1f}/{e['sink_bytes'] / 1e6:.1f}" if e else f"{p['sink_bytes'] / 1e6:.1f}/-",
            f"{p['sink_cpu']:.2f}/{e['sink_cpu']:.2f}" if e else f"{p['sink_cpu']:.2f}/-",
        ))
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(hdr))]
    for l in lines:
        print("  ".join(str(v).rjust(w) for v, w in zip(l, widths)))
    # Checks: calls = ceil(sent/200) and match what the sink counted.
    for name, p, e in results:
        for who, r in (("peer", p), ("ebb", e)):
            if not r:
                continue
            want = math.ceil(r["sent"] / 200)
            if r["calls"] != want or r["sink_calls"] != r["calls"] or r["code"] != 0:
                print(f"WARN [{name}] {who}: calls={r['calls']} sink saw {r['sink_calls']} "
                      f"ceil(sent/200)={want} exit={r['code']}")


if __name__ == "__main__":
    main()
