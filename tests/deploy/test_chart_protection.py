"""The chart's protections: an optional NetworkPolicy that lets in only scrapes of the metrics port and
out only Kafka, DNS and the partners' HTTPS, and a refusal of credentials written literally in
`config` (they would be stored in a ConfigMap)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "streamproc"
HELM = ROOT / ".cache" / "bin" / "helm"


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        # check-deploy builds helm into .cache/bin (minutes, once) and checks the chart as a whole.
        subprocess.run(["bash", str(ROOT / "scripts" / "check-deploy")], cwd=ROOT, check=False, timeout=2400)
    if not HELM.exists():
        pytest.fail("helm could not be built by scripts/check-deploy")
    return HELM


def render(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "rel", str(CHART), "--namespace", "data", "--kube-version", "1.31.0", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def objects(helm: Path, *args: str) -> list[dict[str, Any]]:
    proc = render(helm, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def test_no_network_policy_unless_enabled(helm: Path) -> None:
    assert not [o for o in objects(helm) if o["kind"] == "NetworkPolicy"]


def test_the_network_policy_admits_scrapes_and_lets_out_kafka_dns_and_https(helm: Path) -> None:
    docs = objects(
        helm,
        "-f",
        str(CHART / "ci" / "networkpolicy-values.yaml"),
        "--set",
        "jobs.replay.enabled=true",
    )
    (policy,) = [o for o in docs if o["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # It covers the worker pods and the Jobs' pods.
    selector = spec["podSelector"]["matchLabels"]
    pods = [o["spec"]["template"] for o in docs if o["kind"] == "Deployment"]
    pods += [o["spec"]["template"] for o in docs if o["kind"] == "Job"]
    assert len(pods) == 2
    assert all(selector.items() <= pod["metadata"]["labels"].items() for pod in pods)
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": 9464, "protocol": "TCP"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    ports = [[(p["port"], p["protocol"]) for p in rule["ports"]] for rule in spec["egress"]]
    assert ports == [[(9093, "TCP")], [(53, "UDP"), (53, "TCP")], [(443, "TCP")], [(8081, "TCP")]]
    kafka, _dns, partners, _registry = spec["egress"]
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # The partners are public: cluster-internal and link-local ranges are not reachable on 443.
    assert partners["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in partners["to"][0]["ipBlock"]["except"]


def with_settings(tmp_path: Path, client: dict[str, str], settings: dict[str, str]) -> str:
    values = {
        "config": {
            "kafka": {
                "bootstrap_servers": "kafka:9093",
                "topics": ["segment-events"],
                "dead_letter_topic": "segment-events.dlq",
                "client": client,
            },
            "destinations": [{"id": "tiktok", "type": "tiktok-offline-conversions", "settings": settings}],
        }
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


REFERENCES = {"accessToken": "${TIKTOK_ACCESS_TOKEN}", "eventSetID": "7312"}


@pytest.mark.parametrize(
    ("client", "settings", "where"),
    [
        ({}, {**REFERENCES, "accessToken": "3f9c2a1b7e6d5c4b"}, "destinations[0].settings.accessToken"),
        ({"sasl.password": "hunter2-and-more"}, REFERENCES, "kafka.client.sasl.password"),
        ({"ssl.key.password": "changeit"}, REFERENCES, "kafka.client.ssl.key.password"),
    ],
)
def test_a_credential_written_literally_is_refused(
    helm: Path, tmp_path: Path, client: dict[str, str], settings: dict[str, str], where: str
) -> None:
    proc = render(helm, "-f", with_settings(tmp_path, client, settings))
    assert proc.returncode != 0
    assert f"config.{where}: a credential written literally would be stored in a ConfigMap" in proc.stderr


def test_references_and_ordinary_literals_are_accepted(helm: Path, tmp_path: Path) -> None:
    client = {"sasl.username": "streamproc", "sasl.password": "${KAFKA_SASL_PASSWORD}"}
    docs = objects(helm, "-f", with_settings(tmp_path, client, REFERENCES))
    (configmap,) = [o for o in docs if o["kind"] == "ConfigMap"]
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["kafka"]["client"]["sasl.password"] == "${KAFKA_SASL_PASSWORD}"
    assert config["destinations"][0]["settings"] == REFERENCES
