"""Segment's gates before a destination's triggers: the integrations object, consent, destination
filters, as the router applies them per destination instance."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_config import fake_destination

from streamproc.config import parse_config
from streamproc.core.gates import consent_allows, consent_preferences, integrations_allow
from streamproc.router import Router

TIKTOK = ("Tiktok Offline Conversions (Actions)", "Tiktok Offline Conversions")
SEG = ("Seg",)

# -- the integrations object (analytics-next's rule) ------------------------------------------------------


@pytest.mark.parametrize(
    ("integrations", "names", "allowed"),
    [
        (None, SEG, True),
        ({}, SEG, True),
        ({"All": False}, SEG, False),
        ({"All": True}, SEG, True),
        ({"All": False, "Mixpanel": True}, SEG, False),  # Engage's events for another tool
        ({"All": False, "Seg": True}, SEG, True),  # an explicit key wins over All
        ({"Seg": False}, SEG, False),
        ({"seg": False}, SEG, True),  # keys are case-sensitive
        ({"All": False, "Tiktok Offline Conversions": {"ttclid": "x"}}, TIKTOK, True),  # options allow
        ({"Tiktok Offline Conversions": False}, TIKTOK, False),  # an alternative name counts
        ({"Tiktok Offline Conversions (Actions)": True, "Tiktok Offline Conversions": False}, TIKTOK, True),
        ({"All": False, "Tiktok Offline Conversions (Actions)": None}, TIKTOK, False),  # null: All decides
        ({"Seg": 0}, SEG, False),  # the explicit key is read by truthiness
        ({"All": 0}, SEG, True),  # All blocks only when it is false
        ("Seg", SEG, True),  # not an object: absent
        (["Seg"], SEG, True),
    ],
)
def test_the_integrations_object(integrations: Any, names: tuple[str, ...], allowed: bool) -> None:
    assert integrations_allow(integrations, names) is allowed


def test_the_last_alternative_name_present_decides_even_when_null() -> None:
    names = ("Primary", "Alt 1", "Alt 2")
    assert integrations_allow({"Alt 1": False, "Alt 2": True}, names)
    # analytics-next keeps the last alternative present, null included, and then falls to All
    assert integrations_allow({"All": True, "Alt 1": False, "Alt 2": None}, names)
    assert not integrations_allow({"All": False, "Alt 1": True, "Alt 2": None}, names)


# -- consent (Segment's reconciliation table) -------------------------------------------------------------


def prefs(**categories: Any) -> dict[str, Any]:
    return {"context": {"consent": {"categoryPreferences": categories}}}


@pytest.mark.parametrize(
    ("event", "categories", "allowed"),
    [
        ({}, ("ad",), True),  # no consent object: data flows to all destinations
        ({"context": {}}, ("ad",), True),
        ({"context": {"consent": {}}}, ("ad",), True),
        ({"context": {"consent": {"categoryPreferences": None}}}, ("ad",), True),
        (prefs(), ("ad",), False),  # an empty categoryPreferences: consent is false for all categories
        (prefs(), (), True),  # destinations not mapped to a category receive everything
        (prefs(ad=True, analytics=False), ("ad",), True),
        (prefs(ad=True, analytics=False), ("analytics",), False),
        (prefs(ad=True, analytics=False), ("ad", "analytics"), False),  # every category must be true
        (prefs(ad=True, analytics=True), ("ad", "analytics"), True),
        (prefs(ad="true"), ("ad",), False),  # only the boolean true consents
        ({"context": {"consent": {"categoryPreferences": ["ad"]}}}, ("ad",), False),
    ],
)
def test_consent(event: dict[str, Any], categories: tuple[str, ...], allowed: bool) -> None:
    assert consent_allows(consent_preferences(event), categories) is allowed


# -- the router, per destination instance ------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamproc.destinations import registry

    dest = fake_destination(integration_names=("Fake (Actions)", "Fake"))
    monkeypatch.setitem(registry._MODULES, "fake", "unused")
    monkeypatch.setitem(registry._loaded, "fake", dest)
    return dest


def instance(id: str, **extra: Any) -> dict[str, Any]:
    subs = [{"name": "all", "trigger": 'type = "track"', "action": "send"}]
    return {"id": id, "type": "fake", "settings": {"key": "k"}, "subscriptions": subs, **extra}


def router(*instances: dict[str, Any], **kw: Any) -> Router:
    return Router(parse_config({"destinations": list(instances)}, "t.yaml", {}), **kw)


def track(**extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "messageId": "m1", "userId": "u1", **extra}


def test_gates_pick_the_instances_and_say_why_the_others_get_nothing(fake: Any) -> None:
    r = router(
        instance("plain"),
        instance("consented", consent_categories=["C0004"]),
        instance("upstream", integrations="ignore"),
        instance("named", integration_names=["Fake EU"]),
        instance("tests-dropped", filters=[{"if": "contains(lowercase(event), 'test')", "drop": True}]),
    )
    deliveries, withheld = r.routed(track())
    assert [d.destination for d in deliveries] == ["plain", "consented", "upstream", "named", "tests-dropped"]
    assert withheld == ()

    event = track(
        event="Test Order",
        integrations={"All": False, "Fake EU": True},
        context={"consent": {"categoryPreferences": {"C0004": False}}},
    )
    deliveries, withheld = r.routed(event)
    assert [d.destination for d in deliveries] == ["upstream", "named"]
    assert withheld == (
        ("plain", "integrations"),
        ("consented", "consent"),
        ("tests-dropped", "integrations"),
    )


def test_consent_is_checked_before_the_integrations_object(fake: Any) -> None:
    r = router(instance("ads", consent_categories=["ad"]))
    event = track(integrations={"Fake": False}, context={"consent": {"categoryPreferences": {"ad": False}}})
    assert r.routed(event) == ([], (("ads", "consent"),))


def test_an_instance_whose_triggers_match_nothing_counts_as_no_subscription(fake: Any) -> None:
    r = router(instance("a"), instance("b", subscriptions=[{"preset": "Signed Up"}]))
    deliveries, withheld = r.routed(track())
    assert [d.destination for d in deliveries] == ["a"]
    assert withheld == (("b", "no_subscription"),)
    assert r.routed({"type": "page"}) == ([], (("a", "no_subscription"), ("b", "no_subscription")))


def test_property_filters_change_only_that_instances_copy_and_its_triggers_see_it(fake: Any) -> None:
    r = router(
        instance("keeps"),
        instance("no-user", filters=[{"if": "all", "drop_properties": ["userId"]}]),
        instance("no-event", filters=[{"if": "all", "drop_properties": ["type"]}]),
    )
    event = track()
    deliveries, withheld = r.routed(event)
    by_dest = {d.destination: json.loads(d.requests[0].body) for d in deliveries}
    assert by_dest == {
        "keeps": {"name": "Order Completed", "user": "u1"},
        "no-user": {"name": "Order Completed"},
    }
    assert withheld == (("no-event", "no_subscription"),)  # its trigger reads type, which it dropped
    assert event == track()  # the caller's event is whole
    assert all(d.delivery_id.startswith("m1:") and d.ordering_key == "u1" for d in deliveries)


def test_sampling_by_a_path_withholds_the_same_users_every_time(fake: Any) -> None:
    r = router(instance("half", filters=[{"if": "all", "sample": {"percent": 0.5, "path": "userId"}}]))
    kept = {u for u in (f"u{i}" for i in range(400)) if r.route(track(userId=u))}
    assert 150 < len(kept) < 250
    assert kept == {u for u in (f"u{i}" for i in range(400)) if r.route(track(userId=u, messageId="other"))}
    withheld = r.routed(track(userId=next(f"u{i}" for i in range(400) if f"u{i}" not in kept)))[1]
    assert withheld == (("half", "filter_sample"),)


def test_a_random_sample_is_drawn_once_and_not_again_for_a_redelivery(fake: Any) -> None:
    r = router(instance("tenth", filters=[{"if": "all", "sample": {"percent": 0.1}}]), random=lambda: 0.5)
    assert r.routed(track()) == ([], (("tenth", "filter_sample"),))
    deliveries, withheld = r.routed(track(), subscriptions={("tenth", "all")}, redelivery=True)
    assert [d.destination for d in deliveries] == ["tenth"] and withheld == ()


def test_asking_for_some_instances_reports_only_those(fake: Any) -> None:
    r = router(instance("a", consent_categories=["x"]), instance("b"), instance("c"))
    event = track(context={"consent": {"categoryPreferences": {}}})
    assert r.routed(event, destinations={"a"}) == ([], (("a", "consent"),))
    deliveries, withheld = r.routed(event, subscriptions={("b", "all")})
    assert [d.destination for d in deliveries] == ["b"] and withheld == ()
    assert r.routed({"type": "page"}, destinations={"c"}) == ([], (("c", "no_subscription"),))


def test_one_key_applies_to_every_instance_of_the_type(fake: Any) -> None:
    r = router(instance("eu"), instance("us"))
    assert r.routed(track(integrations={"Fake": False})) == (
        [],
        (("eu", "integrations"), ("us", "integrations")),
    )


def test_a_filter_tsub_cannot_evaluate_withholds_the_event(fake: Any) -> None:
    r = router(instance("a", filters=[{"if": "'x' in properties.name", "drop": True}]))
    assert r.routed(track(properties={"name": "x y"})) == ([], (("a", "filter_drop"),))
    assert len(r.routed(track(properties={"name": ["y"]}))[0]) == 1
