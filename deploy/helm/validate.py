"""Validates `helm template` output: Kubernetes schemas, the chart's CRD objects, the worker's rules."""

# Usage: validate.py KUBE_VERSION RENDERED.yaml...   (run by scripts/check-deploy inside .venv)
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# kubernetes-validate only knows built-in kinds; these are the operator CRDs the chart can render,
# checked against the fields the chart sets (a subset of each CRD's own schema).
_STR = {"type": "string", "minLength": 1}
_META = {"type": "object", "required": ["name"], "properties": {"name": _STR}}


def _crd(spec: dict[str, Any]) -> dict[str, Any]:
    """A custom object: a named metadata and a `spec` of the given schema."""
    return {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {"metadata": _META, "spec": spec},
    }


CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": _STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        }
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": _STR,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": _STR,
                                        "expr": _STR,
                                        "for": {"type": "string", "pattern": "^[0-9]+(s|m|h)$"},
                                        "labels": {"type": "object"},
                                        "annotations": {"type": "object"},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        }
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "kafka"},
                            "metadata": {
                                "type": "object",
                                # KEDA reads every trigger metadata value as a string.
                                "additionalProperties": {"type": "string"},
                                "required": [
                                    "bootstrapServers",
                                    "consumerGroup",
                                    "topic",
                                    "lagThreshold",
                                ],
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": _STR},
                            },
                        },
                    },
                },
            },
        }
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretTargetRef"],
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"enum": ["username", "password", "ca", "cert", "key"]},
                            "name": _STR,
                            "key": _STR,
                        },
                    },
                }
            },
        }
    ),
}


def check_workload(doc: dict[str, Any], config: dict[str, Any] | None) -> list[str]:
    """The pod rules the chart promises: non-root, read-only root, no privileges, grace > drain."""
    problems: list[str] = []
    pod = doc["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {c['name']}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {c['name']}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"container {c['name']}: capabilities do not drop ALL")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"container {c['name']}: no memory limit")
    drain = float(((config or {}).get("limits") or {}).get("shutdown_timeout", 30.0))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain:
        problems.append(f"terminationGracePeriodSeconds {grace} <= shutdown_timeout {drain}")
    if doc["kind"] == "Deployment":
        c = pod["containers"][0]
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append("liveness probe is not /healthz")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append("readiness probe is not /readyz")
        if "checksum/config" not in doc["spec"]["template"]["metadata"].get("annotations", {}):
            problems.append("no checksum/config annotation: a config change would not roll the pods")
        if not pod.get("topologySpreadConstraints"):
            problems.append("no topologySpreadConstraints")
    return problems


# Values shaped like the real secrets, so the settings' own validation runs on them.
PLACEHOLDERS = {
    "SEG_WEBSITE_ID": "abc8fb18-7559-4324-9921-a4b5015b4a1c",
    "TIKTOK_EVENT_SET_ID": "7312",
    "STACKADAPT_PIXEL_ID": "sqQHa3Ob1hFi__2EcYYVZg1",
}


def _placeholder(var: str) -> str:
    return PLACEHOLDERS.get(var, f"placeholder-{var.lower().replace('_', '-')}")


def check_config(text: str, name: str) -> list[str]:
    """The rendered streamproc config loads under the Config contract (placeholders for ${VAR})."""
    try:
        from streamproc.config import parse_config
        from streamproc.errors import ConfigError
    except ImportError as exc:
        return [f"cannot import streamproc.config: {exc}"]
    data = yaml.safe_load(text)
    env = {var: _placeholder(var) for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)}
    try:
        parse_config(data, f"{name}:config.yaml", env)
    except ConfigError as exc:
        return [f"config.yaml does not load: {exc}"]
    return []


def _subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def check_selectors(docs: list[dict[str, Any]]) -> list[str]:
    """Service, PDB and ServiceMonitor select exactly what they should: workers, not Job pods."""
    problems: list[str] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    workers = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind.get("Deployment", [])]
    jobs = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind.get("Job", [])]
    selectors = [("Service", d["spec"]["selector"]) for d in by_kind.get("Service", [])]
    selectors += [
        ("PodDisruptionBudget", d["spec"]["selector"]["matchLabels"])
        for d in by_kind.get("PodDisruptionBudget", [])
    ]
    for kind, sel in selectors:
        if not all(_subset(sel, w) for w in workers):
            problems.append(f"{kind} selector {sel} does not select the worker pods")
        if any(_subset(sel, j) for j in jobs):
            problems.append(f"{kind} selector {sel} also selects Job pods")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        if not any(_subset(sel, s["metadata"].get("labels", {})) for s in by_kind.get("Service", [])):
            problems.append(f"ServiceMonitor selector {sel} matches no Service of the release")
    return problems


def check_keda(docs: list[dict[str, Any]], config: dict[str, Any] | None) -> list[str]:
    """A KEDA trigger connects as the worker does: literal brokers, credentials when the worker has them."""
    problems: list[str] = []
    client = ((config or {}).get("kafka") or {}).get("client") or {}
    protocol = str(client.get("security.protocol", "PLAINTEXT")).upper()
    auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            meta, ref = trigger["metadata"], (trigger.get("authenticationRef") or {}).get("name")
            if "$" in meta["bootstrapServers"]:
                problems.append(f"trigger bootstrapServers {meta['bootstrapServers']!r} is not expanded")
            if protocol.startswith("SASL_") and not ref:
                problems.append("the worker authenticates with SASL but the trigger has no authenticationRef")
            if ref and ref.startswith(so["metadata"]["name"]) and ref not in auths:
                problems.append(f"trigger names TriggerAuthentication {ref}, which the chart did not render")
            if ref in auths and protocol.startswith("SASL_") and not meta.get("sasl"):
                problems.append("the chart's TriggerAuthentication is used but the trigger sets no sasl mode")
    return problems


def main(argv: list[str]) -> int:
    kube_version, files = argv[0], argv[1:]
    failed = 0
    for path in files:
        name = Path(path).stem
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        config = None
        for d in docs:
            if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}):
                config = yaml.safe_load(d["data"]["config.yaml"])
        for d in docs:
            where = f"{name}: {d['kind']}/{d['metadata']['name']}"
            problems: list[str] = []
            crd = CRD_SCHEMAS.get((d["apiVersion"], d["kind"]))
            if crd is not None:
                validator = jsonschema.Draft7Validator(crd)
                problems += [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message} (chart's own CRD schema)"
                    for e in validator.iter_errors(d)
                ]
            else:
                try:
                    kubernetes_validate.validate(d, kube_version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    problems.append(f"{'/'.join(map(str, exc.path))}: {exc.message}")
                except kubernetes_validate.SchemaNotFoundError:
                    problems.append(
                        f"no schema for {d['apiVersion']} {d['kind']} in Kubernetes {kube_version}"
                    )
            if d["kind"] in ("Deployment", "Job"):
                problems += check_workload(d, config)
            if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}):
                problems += check_config(d["data"]["config.yaml"], name)
            status = "ok" if not problems else "FAIL"
            note = " (CRD: checked with the chart's own schema)" if crd is not None else ""
            print(f"  {status:4} {where}{note}")
            for p in problems:
                print(f"       - {p}")
            failed += bool(problems)
        problems = check_selectors(docs) + check_keda(docs, config)
        status = "ok" if not problems else "FAIL"
        print(
            f"  {status:4} {name}: Service, PDB and ServiceMonitor selectors; the KEDA trigger's connection"
        )
        for p in problems:
            print(f"       - {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
