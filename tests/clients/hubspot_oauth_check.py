#!/usr/bin/env python3
"""Drives the sandbox's HubSpot OAuth token endpoint, deals and custom object with
hubspot-api-client, HubSpot's official Python client.

Usage: hubspot_oauth_check.py SANDBOX_URL CLIENT_ID CLIENT_SECRET REFRESH_TOKEN

The client's `host` is pointed at the sandbox; everything else is as the client builds it
(its form-urlencoded token request, its models for the answers, so a body that does not
fit them fails here). The first failure exits 1 with the step and the reason.
`tests/sandbox_hubspot/client.rs` runs this script.
"""

import sys
import traceback

from hubspot import HubSpot
from hubspot.crm.objects import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectBatchInputUpsert,
)
from hubspot.oauth import ApiException as OAuthException

step = "start"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    global step
    url, client_id, client_secret, refresh_token = sys.argv[1:5]

    step = "token from the refresh token"
    tokens = HubSpot(host=url).oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
    )
    check(tokens.access_token and tokens.token_type == "bearer", tokens)
    check(tokens.expires_in == 1800, f"expires_in: {tokens.expires_in}")
    check(tokens.refresh_token == refresh_token, "HubSpot answers the same refresh token")

    client = HubSpot(access_token=tokens.access_token, host=url)

    step = "deals: upsert by a unique custom property, with the access token"
    inputs = [
        SimplePublicObjectBatchInputUpsert(
            id_property="warehouse_id",
            id=f"D-{i}",
            properties={"dealname": f"Deal {i}", "amount": str(100 * i), "dealstage": "qualifiedtobuy"},
        )
        for i in range(3)
    ]
    r = client.crm.objects.batch_api.upsert(
        "deals", BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
    )
    check(r.status == "COMPLETE" and len(r.results) == 3 and all(x.new for x in r.results), r)

    step = "deals: read back through the deals API"
    page = client.crm.deals.basic_api.get_page(properties=["dealname", "amount", "warehouse_id"])
    got = sorted((x.properties["warehouse_id"], x.properties["amount"]) for x in page.results)
    check(got == [("D-0", "0"), ("D-1", "100"), ("D-2", "200")], got)

    step = "custom object: upsert by its p_ name, list by its objectTypeId"
    r = client.crm.objects.batch_api.upsert(
        "p_subscriptions",
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                SimplePublicObjectBatchInputUpsert(
                    id_property="subscription_id", id="S-1", properties={"plan": "Professional", "mrr": "49"}
                )
            ]
        ),
    )
    check(len(r.results) == 1 and r.results[0].new, r)
    page = client.crm.objects.basic_api.get_page("2-1234567", properties=["subscription_id", "plan"])
    check([x.properties["subscription_id"] for x in page.results] == ["S-1"], page)
    check(page.results[0].properties["plan"] == "Professional", page)

    step = "a wrong refresh token"
    try:
        HubSpot(host=url).oauth.tokens_api.create(
            grant_type="refresh_token",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token="not-the-refresh-token",
        )
        check(False, "a wrong refresh token was accepted")
    except OAuthException as e:
        check(e.status == 400 and "BAD_REFRESH_TOKEN" in e.body, f"{e.status} {e.body}")

    step = "a token that is not one the endpoint issued"
    try:
        HubSpot(access_token=tokens.access_token + "x", host=url).crm.objects.basic_api.get_page("deals")
        check(False, "an unknown access token was accepted")
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
