"""Usage: every verdict on a key counted per minute, hour and day and per outcome, and read back per key,
per owner, or for the whole organization."""

from __future__ import annotations

import re
import threading
from datetime import UTC, timedelta

from sqlalchemy import func, select

from keyhouse.store import usage
from keyhouse.store.models import ApiKey, KeyAddress, KeyUsage, OrganizationUsage, utcnow
from keyhouse.store.session import retrying
from tests.helpers import API, verify
from tests.helpers import create_key as create

ZEROS = dict.fromkeys(["VALID", "EXPIRED", "REVOKED", "FORBIDDEN", "INSUFFICIENT_PERMISSIONS", "RATE_LIMITED",
                       "USAGE_EXCEEDED"], 0)


def _usage(client, actor, key_id, **params):
    answer = client.get(f"{API}/keys/{key_id}/usage", params=params, headers=actor.bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _pk(app, key_id: str) -> int:
    with app.runtime.store.session() as s:
        return s.scalar(select(ApiKey.pk).where(ApiKey.id == key_id))


def _counted(**outcomes) -> dict:
    return {**ZEROS, **outcomes}


def _summed(buckets: list[dict]) -> tuple[int, dict]:
    """(total, outcomes) over buckets: a test's verdicts may straddle the turn of a minute."""
    outcomes = dict(ZEROS)
    for bucket in buckets:
        assert bucket["total"] == sum(bucket["outcomes"].values())
        for name, n in bucket["outcomes"].items():
            outcomes[name] += n
    return sum(b["total"] for b in buckets), outcomes


def test_every_verdict_on_a_key_is_counted_by_outcome_in_every_granularity(app, client, world):
    admin = world.acme_admin
    key = create(client, admin, name="cus_42", allowed_ips=["192.0.2.0/24"], credits={"remaining": 2})
    for _ in range(2):
        assert verify(client, admin, key["key"], ip="192.0.2.1", cost=1)["code"] == "VALID"
    assert verify(client, admin, key["key"], ip="192.0.2.9", cost=1)["code"] == "USAGE_EXCEEDED"
    assert verify(client, admin, key["key"], ip="198.51.100.1")["code"] == "FORBIDDEN"
    assert verify(client, admin, key["key"], ip="192.0.2.1", permissions=["createKey"], cost=0)["code"] == "VALID"
    app.runtime.recorder.flush()
    expected = _counted(VALID=3, USAGE_EXCEEDED=1, FORBIDDEN=1)
    for granularity in ("minute", "hour", "day"):
        body = _usage(client, admin, key["id"], granularity=granularity)
        assert _summed(body["buckets"]) == (5, expected), granularity
        assert 1 <= len(body["buckets"]) <= 2
        assert body["granularity"] == granularity
    addresses = _usage(client, admin, key["id"])["addresses"]
    assert sorted((a["ip"], a["count"]) for a in addresses) == [("192.0.2.1", 3), ("192.0.2.9", 1),
                                                                ("198.51.100.1", 1)]
    # The requests the admin's own key made are its usage too: the create and the five verifies before the
    # flush (the reads since wait for the next).
    own = _usage(client, admin, admin.key_id, granularity="hour")["buckets"]
    assert _summed(own)[1] == _counted(VALID=6)


def test_a_refused_request_counts_against_its_key_and_a_revoked_keys_history_stays(app, client, world):
    admin = world.acme_admin
    key = create(client, admin, name="soon revoked")
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert client.get(f"{API}/keys", headers=headers).status_code == 200
    assert client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer).status_code == 204
    assert client.get(f"{API}/keys", headers=headers).status_code == 401
    app.runtime.recorder.flush()
    # Gone as a resource, as from GET /keys/{key_id}; its history stays in the batch form.
    assert client.get(f"{API}/keys/{key['id']}/usage", headers=admin.bearer).status_code == 404
    history = client.get(f"{API}/usage", params={"key_id": key["id"]}, headers=admin.bearer).json()
    assert [k["key_id"] for k in history["keys"]] == [key["id"]]
    assert _summed(history["keys"][0]["buckets"])[1] == _counted(VALID=1, REVOKED=1)


def test_many_keys_in_one_call_by_id_by_owner_or_all_and_members_see_their_own(app, client, world):
    admin, member = world.acme_admin, world.acme_member
    a = create(client, admin, name="a", owner_id="cus_1")
    b = create(client, admin, name="b", owner_id="cus_1")
    c = create(client, admin, name="c", owner_id="cus_2")
    mine = create(client, member, name="m", owner_id="cus_1")
    for key, times in ((a, 1), (b, 2), (c, 3), (mine, 4)):
        for _ in range(times):
            verify(client, admin, key["key"])
    app.runtime.recorder.flush()

    def report(actor, **params):
        answer = client.get(f"{API}/usage", params={"granularity": "hour", **params}, headers=actor.bearer)
        assert answer.status_code == 200, answer.text
        return answer

    def totals(body):
        return sum(bucket["outcomes"]["VALID"] for bucket in body["total"])

    by_owner = report(admin, owner_id="cus_1")
    assert by_owner.headers["Pagination-Total"] == "3"
    assert totals(by_owner.json()) == 1 + 2 + 4
    assert [(k["key_id"], _summed(k["buckets"])[0]) for k in by_owner.json()["keys"]] == [
        (a["id"], 1), (b["id"], 2), (mine["id"], 4)]
    by_id = report(admin, key_id=[c["id"], a["id"], "no-such-key"]).json()
    assert totals(by_id) == 4 and {k["key_id"] for k in by_id["keys"]} == {a["id"], c["id"]}
    whole = report(admin)  # the organization's own rows: every key, the admin's requests included
    keys_total = sum(_summed(k["buckets"])[0] for k in report(admin, limit=100).json()["keys"])
    assert sum(bucket["total"] for bucket in whole.json()["total"]) == keys_total
    assert whole.headers["Pagination-Total"] == "6"  # the two people's own keys and the four above
    paged = report(admin, limit=1, offset=1).json()["keys"]
    assert len(paged) == 1
    theirs = report(member, owner_id="cus_1")
    assert theirs.headers["Pagination-Total"] == "1" and totals(theirs.json()) == 4
    assert client.get(f"{API}/keys/{a['id']}/usage", headers=member.bearer).status_code == 404
    outsider = report(world.globex_admin, key_id=[a["id"]])  # another organization's key: none of its own
    assert (outsider.json()["total"], outsider.json()["keys"], outsider.headers["Pagination-Total"]) == ([], [], "0")


def test_a_span_is_whole_buckets_and_at_most_1440_of_them(client, world):
    admin = world.acme_admin
    body = _usage(client, admin, admin.key_id, granularity="hour", **{"from": "2026-12-01T10:30:00+02:00",
                                                                     "to": "2026-12-02T00:00:00Z"})
    assert (body["from"], body["to"]) == ("2026-12-01T08:00:00Z", "2026-12-02T00:00:00Z")
    day = _usage(client, admin, admin.key_id, to="2026-12-05T12:00:00Z")
    assert day["from"] == "2026-11-05T00:00:00Z"  # 30 days before, from the start of that day
    backwards = _usage(client, admin, admin.key_id, **{"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"})
    assert backwards["buckets"] == []
    too_long = _usage(client, admin, admin.key_id, granularity="minute",
                      **{"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:01:30Z"})
    assert too_long["from"] == "2026-12-01T00:02:00Z"  # 1,440 whole minutes before `to`, the most served
    assert client.get(f"{API}/usage", params={"granularity": "week"}, headers=admin.bearer).status_code == 400


def test_counts_from_several_processes_add_up_exactly(app, client, world):
    """Every worker of every host adds to the same rows: an upsert that adds, so none is lost or doubled."""
    admin = world.acme_admin
    key = create(client, admin, name="hot")
    pk = _pk(app, key["id"])
    minute = utcnow().replace(second=0, microsecond=0)
    verdicts = {usage.Verdict(pk, admin.organization_id, "VALID", minute): 7}
    addresses = {(pk, "192.0.2.1"): (7, minute, minute)}

    def flush_many():
        for _ in range(20):
            with app.runtime.store.session() as s:
                usage.count_verdicts(s, verdicts, addresses)

    threads = [threading.Thread(target=lambda: retrying(flush_many)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    body = _usage(client, admin, key["id"], granularity="minute")
    assert [b["outcomes"]["VALID"] for b in body["buckets"]] == [4 * 20 * 7]  # one minute, written as one
    assert [(a["ip"], a["count"]) for a in body["addresses"]] == [("192.0.2.1", 4 * 20 * 7)]


def test_minutes_are_pruned_after_two_days_and_days_kept_for_the_retention(app, client, world):
    """What is left after pruning (not how many rows one call deleted: the app's own pruner, every minute,
    may have taken them first)."""
    admin = world.acme_admin
    key = create(client, admin, name="old")
    pk = _pk(app, key["id"])
    three_days_ago = (utcnow() - timedelta(days=3)).replace(second=0, microsecond=0)
    with app.runtime.store.session() as s:
        usage.count_verdicts(s, {usage.Verdict(pk, admin.organization_id, "VALID", three_days_ago): 5},
                             {(pk, "192.0.2.1"): (5, three_days_ago, three_days_ago)})

    def kept() -> dict:
        with app.runtime.store.session() as s:
            rows = s.execute(select(KeyUsage.granularity, func.count()).where(KeyUsage.key_pk == pk)
                             .group_by(KeyUsage.granularity)).tuples().all()
            org = s.scalar(select(func.count()).select_from(OrganizationUsage)
                           .where(OrganizationUsage.organization_id == admin.organization_id))
            return {**dict(rows), "organization": org,
                    "addresses": s.scalar(select(func.count()).select_from(KeyAddress).where(KeyAddress.key_pk == pk))}

    assert kept() == {"minute": 1, "hour": 1, "day": 1, "organization": 3, "addresses": 1}
    app.runtime.recorder.prune_usage(400)
    assert kept() == {"hour": 1, "day": 1, "organization": 2, "addresses": 1}  # the minutes gone, in both
    then = {"from": (three_days_ago - timedelta(hours=1)).astimezone(UTC).isoformat(),
            "to": (three_days_ago + timedelta(hours=1)).astimezone(UTC).isoformat()}
    assert _usage(client, admin, key["id"], granularity="minute", **then)["buckets"] == []
    assert [b["total"] for b in _usage(client, admin, key["id"], granularity="hour", **then)["buckets"]] == [5]
    app.runtime.recorder.prune_usage(2)  # a retention of two days: the hours, the days and the address too
    assert kept() == {"organization": 0, "addresses": 0}
    assert _usage(client, admin, key["id"], granularity="day", **then)["buckets"] == []


def test_the_console_charts_a_keys_verdicts_and_the_organizations(app, client, world):
    from tests.test_console import signed_in

    admin = world.acme_admin
    key = create(client, admin, name="charted", allowed_ips=["192.0.2.0/24"])
    for ip in ("192.0.2.1", "192.0.2.1", "198.51.100.1"):
        verify(client, admin, key["key"], ip=ip)
    app.runtime.recorder.flush()
    signed_in(client, admin)
    page = client.get(f"/console/keys/{key['id']}").text
    # One bar for today: its title says what it holds; the legend sums the span; the addresses are listed.
    assert re.search(r"<title>\d\d \w{3}: 2 valid, 1 refused</title>", page), page
    assert "2 valid</span>" in page and "1 refused</span>" in page
    assert "<code>198.51.100.1</code>" in page and "<code>192.0.2.1</code>" in page
    hourly = client.get(f"/console/keys/{key['id']}?usage=hour").text
    assert re.search(r"<title>\d\d \w{3} \d\d:00: 2 valid, 1 refused</title>", hourly)
    overview = client.get("/console/keys").text
    assert "Every verdict on the organization" in overview and "1 refused</span>" in overview
    assert "<script" not in page.split("</head>")[1]  # drawn on the server: no script, the CSP kept
