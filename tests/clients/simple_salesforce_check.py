#!/usr/bin/env python3
"""Drives `ebb sandbox` with simple-salesforce, an independent Salesforce client.

Usage: simple_salesforce_check.py SANDBOX_URL CLIENT_ID CLIENT_SECRET

SANDBOX_URL is the sandbox's http://127.0.0.1:PORT. simple-salesforce builds https://
URLs (from the domain for the token, from the token's instance_url for the data API);
the requests session it is given sends them to the sandbox over http instead, with
path, query, headers and body as the client built them. Every step asserts what a real
org answers; the first failure exits 1 with the step and the reason. `tests/sandbox_client.rs`
runs this script.
"""

import csv
import datetime
import io
import json
import sys
import traceback
import urllib.parse

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceResourceNotFound,
)


class ToSandbox(HTTPAdapter):
    """Sends every request to the sandbox, keeping what the client built but the origin."""

    def __init__(self, target):
        super().__init__()
        self.target = urllib.parse.urlsplit(target)
        self.sent = []  # (method, path, headers, body) of each request

    def send(self, request, **kwargs):
        url = urllib.parse.urlsplit(request.url)
        self.sent.append((request.method, url.path, dict(request.headers), request.body))
        request.url = urllib.parse.urlunsplit(
            (self.target.scheme, self.target.netloc, url.path, url.query, url.fragment)
        )
        return super().send(request, **kwargs)


def session_to(target):
    adapter = ToSandbox(target)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session, adapter


STEP = ["start"]


def step(name):
    STEP[0] = name
    print(f"simple-salesforce: {name}", flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def main(target, client_id, client_secret):
    session, adapter = session_to(target)

    step("token by client credentials (HTTP Basic)")
    sf = Salesforce(
        consumer_key=client_id,
        consumer_secret=client_secret,
        domain="ebb-sandbox.my",
        session=session,
        version="62.0",
    )
    check(sf.auth_type == "client-credentials", f"auth type {sf.auth_type}")
    method, path, headers, body = adapter.sent[0]
    check((method, path) == ("POST", "/services/oauth2/token"), f"first request {method} {path}")
    check(headers.get("Authorization", "").startswith("Basic "), f"token request headers {headers}")
    form = urllib.parse.parse_qs(body if isinstance(body, str) else body.decode())
    check(form == {"grant_type": ["client_credentials"]}, f"token request body {form}")

    step("a wrong secret is invalid_client")
    bad_session, _ = session_to(target)
    try:
        Salesforce(
            consumer_key=client_id,
            consumer_secret=client_secret + "-wrong",
            domain="ebb-sandbox.my",
            session=bad_session,
            version="62.0",
        )
        raise AssertionError("a wrong secret got a token")
    except SalesforceAuthenticationFailed as e:
        check(e.code == "invalid_client", f"error code {e.code!r}: {e}")

    step("create, update, get a Contact")
    created = sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace", "Crm_Id__c": "PY-1"})
    check(created.get("success") is True and created["id"].startswith("003"), f"create: {created}")
    ada = created["id"]
    status = sf.Contact.update(ada, {"Phone": "555-0100"})
    check(status == 204, f"update status {status}")
    record = sf.Contact.get(ada)
    check(record["Phone"] == "555-0100" and record["IsDeleted"] is False, f"get: {record}")
    check(record["attributes"]["type"] == "Contact", f"attributes {record['attributes']}")

    step("upsert by external id")
    status = sf.Contact.upsert("Crm_Id__c/PY-2", {"LastName": "Hopper"})
    check(status == 201, f"upsert create status {status}")
    status = sf.Contact.upsert("Crm_Id__c/PY-2", {"FirstName": "Grace"})
    check(status == 200, f"upsert update status {status}")
    grace = sf.Contact.get_by_custom_id("Crm_Id__c", "PY-2")
    check((grace["FirstName"], grace["LastName"]) == ("Grace", "Hopper"), f"by external id: {grace}")
    for name in ["Turing", "Liskov", "Hamilton"]:
        sf.Contact.create({"LastName": name})

    step("delete")
    status = sf.Contact.delete(ada)
    check(status == 204, f"delete status {status}")
    try:
        sf.Contact.get(ada)
        raise AssertionError("a deleted record is still served")
    except SalesforceResourceNotFound:
        pass

    step("query, query_all across pages, queryAll")
    soql = "SELECT Id, LastName, IsDeleted FROM Contact ORDER BY LastName"
    live = sf.query_all(soql)
    names = [r["LastName"] for r in live["records"]]
    check(names == ["Hamilton", "Hopper", "Liskov", "Turing"], f"query_all: {names}")
    first = sf.query(soql)
    check(first["totalSize"] == 4, f"query: {first}")
    check(first["done"] or first["nextRecordsUrl"].startswith("/services/data/v62.0/"), f"query: {first}")
    everything = sf.query_all(soql, include_deleted=True)
    rows = {r["LastName"]: r["IsDeleted"] for r in everything["records"]}
    check(everything["totalSize"] == 5 and rows.get("Lovelace") is True, f"queryAll: {rows}")
    check(not any(v for k, v in rows.items() if k != "Lovelace"), f"queryAll: {rows}")
    deleted_only = sf.query("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    check([r["Id"] for r in deleted_only["records"]] == [ada], f"IsDeleted filter: {deleted_only}")

    step("describe: global, basic information, Contact")
    described = sf.describe()
    check("Contact" in [o["name"] for o in described["sobjects"]], f"global describe: {described}")
    metadata = sf.Contact.metadata()
    check(metadata["objectDescribe"]["name"] == "Contact", f"basic information: {metadata}")
    contact = sf.Contact.describe()
    fields = {f["name"]: f for f in contact["fields"]}
    check(fields["Crm_Id__c"]["externalId"] is True, f"describe Crm_Id__c: {fields.get('Crm_Id__c')}")
    check(fields["SystemModstamp"]["type"] == "datetime", "describe SystemModstamp")

    step("updated and deleted")
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(minutes=5)
    updated = sf.Contact.updated(start, end)
    check(grace["Id"] in updated["ids"] and ada not in updated["ids"], f"updated: {updated}")
    check(updated["latestDateCovered"].endswith(":00.000+0000"), f"updated: {updated}")
    deleted = sf.Contact.deleted(start, end)
    check([d["id"] for d in deleted["deletedRecords"]] == [ada], f"deleted: {deleted}")
    check("earliestDateAvailable" in deleted and "latestDateCovered" in deleted, f"deleted: {deleted}")

    step("sObject Collections (restful)")
    answer = sf.restful(
        "composite/sobjects",
        method="POST",
        data=json.dumps(
            {
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Contact"}, "LastName": "Collections"},
                    {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
                ],
            }
        ),
    )
    check(answer[0]["success"] is True, f"collections: {answer}")
    check(answer[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING", f"collections: {answer}")

    step("Bulk API 2.0 upsert and its results")
    results = sf.bulk2.Contact.upsert(
        records=[
            {"Crm_Id__c": "PY-2", "LastName": "Hopper", "Phone": "555-0199", "Customer_Segment__c": "SMB"},
            {"Crm_Id__c": "PY-3", "LastName": "Ritchie", "Phone": "", "Customer_Segment__c": "Enterprise"},
            {"Crm_Id__c": "PY-4", "LastName": "Bad", "Phone": "", "Customer_Segment__c": "Galactic"},
        ],
        external_id_field="Crm_Id__c",
        wait=0.1,
    )
    check(len(results) == 1, f"bulk2 results: {results}")
    job = results[0]
    check(
        (job["numberRecordsProcessed"], job["numberRecordsFailed"]) == (3, 1),
        f"bulk2 job: {job}",
    )
    successes = sf.bulk2.Contact.get_successful_records(job["job_id"])
    check(successes.startswith('"sf__Id","sf__Created"') and successes.count("\n") >= 3, successes)
    failures = sf.bulk2.Contact.get_failed_records(job["job_id"])
    check("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in failures, failures)
    unprocessed = sf.bulk2.Contact.get_unprocessed_records(job["job_id"])
    check("sf__" not in unprocessed, f"unprocessedRecords: {unprocessed!r}")
    check(sf.Contact.get_by_custom_id("Crm_Id__c", "PY-2")["Phone"] == "555-0199", "bulk2 update")

    step("Bulk API 2.0 query and query_all, paged by locator")
    live_names = ["Collections", "Hamilton", "Hopper", "Liskov", "Ritchie", "Turing"]
    pages = list(sf.bulk2.Contact.query("SELECT Id, LastName, Phone FROM Contact", max_records=2, wait=0.1))
    check(len(pages) == 3, f"bulk2 query: {len(pages)} pages of at most 2 records: {pages}")
    rows = [r for page in pages for r in csv.DictReader(io.StringIO(page))]
    check(sorted(r["LastName"] for r in rows) == live_names, f"bulk2 query rows: {rows}")
    hopper = next(r for r in rows if r["LastName"] == "Hopper")
    check(hopper["Phone"] == "555-0199" and hopper["Id"] == grace["Id"], f"bulk2 query Hopper: {hopper}")
    check(next(r for r in rows if r["LastName"] == "Turing")["Phone"] == "", f"null is empty: {rows}")
    pages = list(sf.bulk2.Contact.query_all("SELECT Id, LastName, IsDeleted FROM Contact", max_records=3, wait=0.1))
    rows = [r for page in pages for r in csv.DictReader(io.StringIO(page))]
    deleted = sorted(r["LastName"] for r in rows if r["IsDeleted"] == "true")
    check(len(rows) == 7 and deleted == ["Lovelace"], f"bulk2 query_all rows: {rows}")
    check(next(r for r in rows if r["LastName"] == "Lovelace")["Id"] == ada, f"bulk2 query_all: {rows}")

    step("REST query_all with a datetime filter")
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    soql = format_soql("SELECT Id, LastName FROM Contact WHERE SystemModstamp >= {} ORDER BY LastName", hour_ago)
    check("+00:00" in soql, f"format_soql wrote {soql}")
    recent = sf.query_all(soql)
    check([r["LastName"] for r in recent["records"]] == live_names, f"query_all since an hour ago: {recent}")
    with_deleted = sf.query_all(soql, include_deleted=True)
    check(with_deleted["totalSize"] == 7, f"queryAll since an hour ago: {with_deleted}")
    in_an_hour = hour_ago + datetime.timedelta(hours=2)
    later = sf.query_all(format_soql("SELECT Id FROM Contact WHERE SystemModstamp > {}", in_an_hour))
    check(later["totalSize"] == 0 and later["records"] == [], f"query_all in the future: {later}")

    step("limits and Sforce-Limit-Info")
    limits = sf.limits()
    check("DailyApiRequests" in limits, f"limits: {limits}")
    usage = sf.api_usage.get("api-usage")
    check(usage is not None and usage.used > 0, f"api usage {sf.api_usage}")

    print(f"simple-salesforce: all checks passed ({len(adapter.sent)} requests)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(*sys.argv[1:])
    except Exception as e:  # noqa: BLE001 - any failure is the check's failure
        traceback.print_exc()
        print(f"simple-salesforce check FAILED at step '{STEP[0]}': {e}", file=sys.stderr, flush=True)
        sys.exit(1)
