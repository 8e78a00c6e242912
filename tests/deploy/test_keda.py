"""The KEDA trigger reaches the brokers as the worker does, or the chart refuses to render it."""

from __future__ import annotations

import pytest
from helm_render import CHART, Render, RenderError, one

PROD = str(CHART / "ci" / "sasl-ssl-prod-values.yaml")
KEDA = str(CHART / "ci" / "keda-values.yaml")


def triggers(docs: list) -> list[dict]:
    return one(docs, "ScaledObject")["spec"]["triggers"]


def test_sasl_ssl_worker_gives_the_trigger_its_own_secrets_mechanism_and_ca(render: Render) -> None:
    docs = render("-f", PROD, "--set", "autoscaling.keda.enabled=true")
    auth = one(docs, "TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("streamproc-kafka", "username"),
        "password": ("streamproc-kafka", "password"),
        "ca": ("streamproc-kafka-ca", "ca.crt"),
    }
    # The worker reads the same keys: its env and its mounted CA file.
    worker = one(docs, "Deployment")["spec"]["template"]["spec"]
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in worker["containers"][0]["env"] if "valueFrom" in e
    }
    assert (env["KAFKA_SASL_USERNAME"]["name"], env["KAFKA_SASL_USERNAME"]["key"]) == refs["username"]
    assert any(v.get("secret", {}).get("secretName") == "streamproc-kafka-ca" for v in worker["volumes"])
    for trigger in triggers(docs):
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        meta = trigger["metadata"]
        assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
        assert (
            meta["bootstrapServers"]
            == "b-1.events.internal:9096,b-2.events.internal:9096,b-3.events.internal:9096"
        )


def test_sasl_plaintext_values_get_plain_and_no_tls(render: Render) -> None:
    docs = render("-f", KEDA)
    for trigger in triggers(docs):
        assert trigger["metadata"]["sasl"] == "plaintext" and "tls" not in trigger["metadata"]
        assert trigger["authenticationRef"]["name"] == "streamproc-kafka"
    assert len(triggers(docs)) == 2  # one per input topic


def test_an_operator_s_own_trigger_authentication_is_named_and_carries_sasl_itself(render: Render) -> None:
    docs = render("-f", KEDA, "--set", "autoscaling.keda.authenticationRef=mine")
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    for trigger in triggers(docs):
        assert trigger["authenticationRef"] == {"name": "mine"}
        assert "sasl" not in trigger["metadata"]  # KEDA refuses sasl in both places


def test_a_plaintext_worker_needs_no_authentication(render: Render) -> None:
    docs = render("--set", "autoscaling.keda.enabled=true")
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    (trigger,) = triggers(docs)
    assert "authenticationRef" not in trigger and trigger["metadata"]["bootstrapServers"] == "kafka:9092"


def test_a_bootstrap_variable_is_expanded_from_extra_env_or_its_default(render: Render) -> None:
    docs = render(
        "--set",
        "autoscaling.keda.enabled=true",
        "--set-string",
        "config.kafka.bootstrap_servers=${BROKERS}",
        "--set",
        "extraEnv[0].name=BROKERS",
        "--set-string",
        "extraEnv[0].value=k1:9092\\,k2:9092",
    )
    assert triggers(docs)[0]["metadata"]["bootstrapServers"] == "k1:9092,k2:9092"
    docs = render(
        "--set",
        "autoscaling.keda.enabled=true",
        "--set-string",
        "config.kafka.bootstrap_servers=${BROKERS:-kafka.data:9092}",
    )
    assert triggers(docs)[0]["metadata"]["bootstrapServers"] == "kafka.data:9092"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        # The README's own form: the variable would reach KEDA literally.
        (["--set-string", "config.kafka.bootstrap_servers=${KAFKA_BOOTSTRAP_SERVERS}"], "KEDA cannot expand"),
        # An authenticated worker without the secret the trigger would need.
        (["-f", KEDA, "--set", "kafkaAuth.existingSecret="], "kafkaAuth.existingSecret is empty"),
        # Credentials the trigger cannot share: the worker reads them from other variables.
        (
            ["-f", KEDA, "--set-string", "config.kafka.client.sasl\\.username=${MY_USER}"],
            "must be ${KAFKA_SASL_USERNAME}",
        ),
        # A CA file that is not in the kafkaTLS secret KEDA would be given.
        (["-f", PROD, "--set", "kafkaTLS.existingSecret="], "is not a file of kafkaTLS.existingSecret"),
        (["-f", PROD, "--set-string", "config.kafka.client.sasl\\.mechanism=OAUTHBEARER"], "OAUTHBEARER"),
    ],
    ids=["unexpanded-bootstrap", "no-secret", "other-variables", "ca-outside-secret", "oauthbearer"],
)
def test_the_chart_refuses_a_trigger_that_cannot_connect_like_the_worker(
    render: Render, args: list[str], expect: str
) -> None:
    with pytest.raises(RenderError, match=r"autoscaling\.keda") as info:
        render("--set", "autoscaling.keda.enabled=true", *args)
    assert expect in str(info.value)
