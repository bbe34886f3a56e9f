#!/usr/bin/env python3
"""The Python peer for ebb's benchmarks: the same job, done the obvious way.

Follows the seed's ``CRMSyncService`` pattern: run a SQL query against the warehouse
(DuckDB), map every row to a CRM record, hash each record (md5 of its canonical JSON),
diff the hashes against a snapshot table kept in a local SQLite file (in SQL), POST the
added/changed records in batches of 200 to an HTTP sink from a thread pool
(one ``requests.Session`` per thread), then record the confirmed rows in the snapshot.

    peer.py --warehouse PATH --sink URL --state PATH [--concurrency 4]

Prints one JSON line: {"secs", "read", "sent", "calls", "peak_rss"} (peak_rss in bytes).
Deletions are not sent (the peer only upserts added and changed rows).
"""
import argparse
import concurrent.futures
import hashlib
import json
import resource
import sqlite3
import sys
import threading
import time

import duckdb
import requests

MODEL = "customers"
QUERY = ("SELECT id, first_name, last_name, email, segment, lifetime_value, churn, updated_at "
         "FROM customers")
BATCH_SIZE = 200


def to_record(row):
    id_, first, last, email, segment, ltv, churn, updated = row
    return {
        "id": id_,
        "FirstName": first,
        "LastName": last,
        "Email": email.lower() if email is not None else None,
        "Segment__c": segment,
        "LTV__c": round(float(ltv), 2) if ltv is not None else None,
        "Churn_Risk__c": float(churn) * 100 if churn is not None else None,
        "Last_Update__c": updated.isoformat() if updated is not None else None,
    }


def row_hash(record):
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()


class CRMSyncService:
    def __init__(self, warehouse, sink, state, concurrency):
        self.warehouse = warehouse
        self.sink = sink
        self.state = sqlite3.connect(state)
        self.concurrency = concurrency
        self.local = threading.local()
        self.calls = 0
        self.calls_lock = threading.Lock()
        self.state.executescript(
            """
            CREATE TABLE IF NOT EXISTS snapshot (key TEXT PRIMARY KEY, hash TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, started REAL, sent INTEGER);
            """
        )

    def session(self):
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
        return s

    def read(self):
        con = duckdb.connect(self.warehouse, read_only=True)
        try:
            return con.execute(QUERY).fetchall()
        finally:
            con.close()

    def diff(self, records):
        """Keys of the records whose hash differs from (or is missing in) the snapshot."""
        db = self.state
        db.execute("DROP TABLE IF EXISTS temp.current")
        db.execute("CREATE TEMP TABLE current (key TEXT PRIMARY KEY, hash TEXT NOT NULL)")
        db.executemany("INSERT INTO current (key, hash) VALUES (?, ?)",
                       ((key, h) for key, (h, _) in records.items()))
        rows = db.execute(
            """SELECT c.key, c.hash FROM current c LEFT JOIN snapshot s ON s.key = c.key
               WHERE s.hash IS NULL OR s.hash <> c.hash"""
        ).fetchall()
        db.commit()
        return rows

    def post(self, run_id, batch):
        payload = {"model": MODEL, "run_id": run_id, "operation": "upsert", "records": batch}
        resp = self.session().post(self.sink, json=payload, timeout=30)
        with self.calls_lock:
            self.calls += 1
        resp.raise_for_status()  # a 2xx confirms every record of the batch
        return True

    def sync(self):
        t0 = time.perf_counter()
        run_id = self.state.execute("INSERT INTO runs (started, sent) VALUES (?, 0)",
                                    (time.time(),)).lastrowid
        self.state.commit()

        rows = self.read()
        records = {}
        for row in rows:
            rec = to_record(row)
            records[str(rec["id"])] = (row_hash(rec), rec)
        changed = self.diff(records)

        batches = [changed[i:i + BATCH_SIZE] for i in range(0, len(changed), BATCH_SIZE)]
        confirmed = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self.post, run_id, [records[k][1] for k, _ in b]): b
                       for b in batches}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    fut.result()
                    confirmed.extend(futures[fut])
                except Exception as e:  # a failed batch stays out of the snapshot
                    print(f"batch failed: {e}", file=sys.stderr)

        self.state.executemany("INSERT OR REPLACE INTO snapshot (key, hash) VALUES (?, ?)",
                               confirmed)
        self.state.execute("UPDATE runs SET sent = ? WHERE run_id = ?", (len(confirmed), run_id))
        self.state.commit()
        self.failed = len(changed) - len(confirmed)
        return {
            "secs": round(time.perf_counter() - t0, 4),
            "read": len(rows),
            "sent": len(confirmed),
            "calls": self.calls,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", required=True, help="DuckDB file")
    ap.add_argument("--sink", required=True, help="URL to POST batches to")
    ap.add_argument("--state", required=True, help="SQLite file holding the snapshot")
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    svc = CRMSyncService(a.warehouse, a.sink, a.state, a.concurrency)
    out = svc.sync()
    print(json.dumps(out), flush=True)
    return 1 if svc.failed else 0


if __name__ == "__main__":
    sys.exit(main())
