#!/usr/bin/env python3
"""Drives the sandbox's HubSpot API with hubspot-api-client, HubSpot's official Python client.

Usage: hubspot_check.py SANDBOX_URL TOKEN

The client's `host` (its Configuration.host) is pointed at the sandbox; everything else is
as the client builds it. Each step asserts what HubSpot answers, through the client's own
models (so a body that does not fit them fails here); the first failure exits 1 with the
step and the reason. `tests/sandbox_hubspot/client.rs` runs this script.
"""

import sys
import traceback

from hubspot import HubSpot
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
)

step = "start"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def upsert(client, rows):
    inputs = [
        SimplePublicObjectBatchInputUpsert(
            id_property="email", id=email, properties=props, object_write_trace_id=trace
        )
        for (email, props, trace) in rows
    ]
    return client.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
    )


def main():
    global step
    url, token = sys.argv[1], sys.argv[2]
    client = HubSpot(access_token=token, host=url)

    step = "properties"
    props = client.crm.properties.core_api.get_all("contacts").results
    email = [p for p in props if p.name == "email"][0]
    check(email.has_unique_value, f"email is unique: {email}")

    step = "batch upsert, new"
    r = upsert(client, [(f"py{i}@x.com", {"firstname": f"Py{i}"}, f"row-{i}") for i in range(5)])
    check(r.status == "COMPLETE", r.status)
    check(len(r.results) == 5 and all(x.new for x in r.results), r)
    ids = {x.object_write_trace_id: x.id for x in r.results}
    check(sorted(ids) == [f"row-{i}" for i in range(5)], ids)

    step = "batch upsert, existing, one bad value (207)"
    r = upsert(
        client,
        [("py0@x.com", {"lastname": "Zero"}, "row-0"), ("py1@x.com", {"lifecyclestage": "nope"}, "row-1")],
    )
    check(r.num_errors == 1, f"numErrors: {r}")
    check(r.results[0].new is False and r.results[0].id == ids["row-0"], r.results[0])
    check(r.errors[0].context["objectWriteTraceId"] == ["row-1"], r.errors[0])

    step = "list, paged"
    seen, after = [], None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=2, after=after, properties=["email", "lastname"])
        seen += [x.id for x in page.results]
        # The client sends properties=email&properties=lastname: both come back.
        check(all("lastname" in x.properties and "email" in x.properties for x in page.results), page)
        if page.paging is None:
            break
        after = page.paging.next.after
    check(seen == sorted(ids.values(), key=int), f"{seen} vs {ids}")

    step = "archive, then list archived"
    client.crm.contacts.batch_api.archive(
        BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=ids["row-4"])])
    )
    archived = client.crm.contacts.basic_api.get_page(archived=True)
    check([x.id for x in archived.results] == [ids["row-4"]], archived)
    check(archived.results[0].archived is True, archived)

    step = "wrong token"
    try:
        HubSpot(access_token="pat-na1-wrong", host=url).crm.contacts.basic_api.get_page()
        check(False, "a wrong token was accepted")
    except ApiException as e:
        check(e.status == 401, e)

    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        print(f"FAILED at step `{step}`:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
