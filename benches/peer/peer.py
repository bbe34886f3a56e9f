#!/usr/bin/env python3
"""The Python peer for ebb's benchmarks: the same job, done the obvious way.

Follows the seed's ``CRMSyncService`` pattern: run a SQL query against the warehouse
(DuckDB), map every row to a CRM record, hash each record (md5 of its canonical JSON),
diff the hashes against a snapshot table kept in a local SQLite file (in SQL: added or
changed keys, and keys that are gone), send the records in batches of 200 from a thread
pool (one ``requests.Session`` per thread), then update the snapshot for the confirmed
records only.

Two targets:

- ``--sink URL``: a plain HTTP sink. Each batch is a POST of
  ``{"model", "run_id", "operation": "upsert" | "delete", "records"}``; the answer is
  ``{"results": [{"id", "success", "errors"}, ...]}``, one result per record, in order.
  Added and changed rows are upserted; keys that are gone are deleted (``{"id": key}``).
- ``--salesforce URL``: the Salesforce sandbox. A client-credentials token, then
  ``PATCH composite/sobjects/Contact/Warehouse_Id__c`` (upsert by external ID) with
  ``allOrNone: false``; the answer is an array of ``{"id", "success", "errors", "created"}``.
  Keys that are gone are not deleted (reported on stderr).

A record is confirmed only if its result says ``success: true``; a non-2xx answer, or an
answer with a different number of results than records, fails the whole batch.

    peer.py --warehouse PATH --state PATH (--sink URL | --salesforce URL) [--concurrency 4]

Prints one JSON line: {"secs", "read", "upserts", "deletes", "sent", "calls", "failed",
"peak_rss"} (peak_rss in bytes; calls do not count the token request). Exits 1 if any
record failed.
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
QUERY = ("SELECT id, first_name, last_name, email, segment, score, updated_at, active "
         "FROM customers")
BATCH_SIZE = 200
API_VERSION = "v66.0"
CLIENT_ID = CLIENT_SECRET = "ebb-sandbox"


def sink_record(row):
    """The record for the HTTP sink (field for field what ebb sends)."""
    id_, first, last, email, segment, score, updated, active = row
    return {
        "id": id_,
        "FirstName": first,
        "LastName": last,
        "Email": email.lower() if email is not None else None,
        "Segment__c": segment,
        "Score__c": round(score, 2) if score is not None else None,
        "Last_Update__c": updated.isoformat() if updated is not None else None,
        "Active__c": active,
    }


def salesforce_record(row):
    """The Contact for the Salesforce upsert, keyed by the external ID Warehouse_Id__c."""
    id_, first, last, email, _segment, score, _updated, _active = row
    return {
        "attributes": {"type": "Contact"},
        "Warehouse_Id__c": str(id_),
        "FirstName": first,
        "LastName": last,
        "Email": email.lower() if email is not None else None,
        "Upsell_Score__c": round(score, 2) if score is not None else None,
    }


def row_hash(record):
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()


class BatchFailed(Exception):
    pass


def check_results(resp, results, n):
    """One success flag per record, or BatchFailed for a bad answer."""
    if not 200 <= resp.status_code < 300:
        raise BatchFailed(f"HTTP {resp.status_code}: {resp.text[:200]}")
    if not isinstance(results, list) or len(results) != n:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise BatchFailed(f"{got} results for {n} records")
    ok = [isinstance(r, dict) and r.get("success") is True for r in results]
    if not all(ok):
        first = next(r for r, good in zip(results, ok) if not good)
        print(f"{ok.count(False)} of {n} records failed, e.g. {json.dumps(first)[:300]}",
              file=sys.stderr)
    return ok


class CRMSyncService:
    def __init__(self, warehouse, state, concurrency, sink=None, salesforce=None):
        self.warehouse = warehouse
        self.sink = sink
        self.salesforce = salesforce.rstrip("/") if salesforce else None
        self.to_record = salesforce_record if salesforce else sink_record
        self.token = None
        self.instance_url = None
        self.state = sqlite3.connect(state)
        self.concurrency = concurrency
        self.local = threading.local()
        self.calls = 0
        self.calls_lock = threading.Lock()
        self.failed = 0
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
            if self.token:
                s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def count_call(self):
        with self.calls_lock:
            self.calls += 1

    def login(self):
        resp = requests.post(
            f"{self.salesforce}/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                  "client_secret": CLIENT_SECRET},
            timeout=30,
        )
        if resp.status_code != 200:
            raise SystemExit(f"token request failed: HTTP {resp.status_code}: {resp.text[:300]}")
        body = resp.json()
        self.token = body["access_token"]
        self.instance_url = body["instance_url"].rstrip("/")

    def read(self):
        con = duckdb.connect(self.warehouse, read_only=True)
        try:
            return con.execute(QUERY).fetchall()
        finally:
            con.close()

    def diff(self, records):
        """(key, hash) of the added or changed records, and the keys no longer in the query."""
        db = self.state
        db.execute("DROP TABLE IF EXISTS temp.current")
        db.execute("CREATE TEMP TABLE current (key TEXT PRIMARY KEY, hash TEXT NOT NULL)")
        db.executemany("INSERT INTO current (key, hash) VALUES (?, ?)",
                       ((key, h) for key, (h, _) in records.items()))
        changed = db.execute(
            """SELECT c.key, c.hash FROM current c LEFT JOIN snapshot s ON s.key = c.key
               WHERE s.hash IS NULL OR s.hash <> c.hash"""
        ).fetchall()
        removed = [k for (k,) in db.execute(
            """SELECT s.key FROM snapshot s LEFT JOIN current c ON c.key = s.key
               WHERE c.key IS NULL"""
        )]
        db.commit()
        return changed, removed

    def post(self, run_id, operation, batch):
        """POST one batch to the sink; one success flag per record."""
        payload = {"model": MODEL, "run_id": run_id, "operation": operation, "records": batch}
        self.count_call()
        resp = self.session().post(self.sink, json=payload, timeout=30)
        try:
            results = resp.json().get("results") if 200 <= resp.status_code < 300 else None
        except ValueError:
            results = None
        return check_results(resp, results, len(batch))

    def upsert_contacts(self, batch):
        """PATCH one batch of Contacts by external ID; one success flag per record."""
        url = (f"{self.instance_url}/services/data/{API_VERSION}"
               "/composite/sobjects/Contact/Warehouse_Id__c")
        self.count_call()
        resp = self.session().patch(url, json={"allOrNone": False, "records": batch}, timeout=60)
        try:
            results = resp.json() if 200 <= resp.status_code < 300 else None
        except ValueError:
            results = None
        return check_results(resp, results, len(batch))

    def send(self, jobs):
        """Run (fn, args, keys) jobs on the pool; the keys whose records were confirmed."""
        confirmed = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(fn, *args): keys for fn, args, keys in jobs}
            for fut in concurrent.futures.as_completed(futures):
                keys = futures[fut]
                try:
                    ok = fut.result()
                except Exception as e:  # a failed batch stays out of the snapshot
                    print(f"batch of {len(keys)} failed: {e}", file=sys.stderr)
                    continue
                confirmed.extend(k for k, good in zip(keys, ok) if good)
        return confirmed

    def sync(self):
        t0 = time.perf_counter()
        run_id = self.state.execute("INSERT INTO runs (started, sent) VALUES (?, 0)",
                                    (time.time(),)).lastrowid
        self.state.commit()
        if self.salesforce:
            self.login()

        rows = self.read()
        records = {}
        for row in rows:
            rec = self.to_record(row)
            records[str(row[0])] = (row_hash(rec), rec)
        changed, removed = self.diff(records)
        if self.salesforce and removed:
            print(f"{len(removed)} keys no longer in the query: not deleted (Salesforce mode)",
                  file=sys.stderr)
            removed = []

        hashes = dict(changed)
        jobs = []
        for i in range(0, len(changed), BATCH_SIZE):
            keys = [k for k, _ in changed[i:i + BATCH_SIZE]]
            batch = [records[k][1] for k in keys]
            if self.salesforce:
                jobs.append((self.upsert_contacts, (batch,), [("u", k) for k in keys]))
            else:
                jobs.append((self.post, (run_id, "upsert", batch), [("u", k) for k in keys]))
        for i in range(0, len(removed), BATCH_SIZE):
            keys = removed[i:i + BATCH_SIZE]
            batch = [{"id": k} for k in keys]
            jobs.append((self.post, (run_id, "delete", batch), [("d", k) for k in keys]))
        confirmed = self.send(jobs)

        self.state.executemany("INSERT OR REPLACE INTO snapshot (key, hash) VALUES (?, ?)",
                               ((k, hashes[k]) for op, k in confirmed if op == "u"))
        self.state.executemany("DELETE FROM snapshot WHERE key = ?",
                               ((k,) for op, k in confirmed if op == "d"))
        self.state.execute("UPDATE runs SET sent = ? WHERE run_id = ?", (len(confirmed), run_id))
        self.state.commit()
        self.failed = len(changed) + len(removed) - len(confirmed)
        return {
            "secs": round(time.perf_counter() - t0, 4),
            "read": len(rows),
            "upserts": len(changed),
            "deletes": len(removed),
            "sent": len(confirmed),
            "calls": self.calls,
            "failed": self.failed,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", required=True, help="DuckDB file")
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--sink", help="HTTP sink URL to POST batches to")
    target.add_argument("--salesforce", help="Salesforce (sandbox) base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--state", required=True, help="SQLite file holding the snapshot")
    ap.add_argument("--concurrency", type=int, default=4, help="thread-pool size")
    a = ap.parse_args()
    svc = CRMSyncService(a.warehouse, a.state, a.concurrency, sink=a.sink, salesforce=a.salesforce)
    out = svc.sync()
    print(json.dumps(out), flush=True)
    return 1 if svc.failed else 0


if __name__ == "__main__":
    sys.exit(main())
