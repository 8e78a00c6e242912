"""Every install the docs show works as written: for each `helm upgrade --install` in a shell block of the
docs, the secrets the docs create before it (and only those) are made, the chart is rendered with the
same arguments, and `streamproc check` runs on the rendered configuration with exactly the environment
the rendered pods get (env and envFrom resolved against those secrets, mounted secret files present).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_render import ROOT, Render

DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHART_PATH = "deploy/helm/streamproc"
# Values for the shell variables the docs' commands use, shaped like the real ones so that the
# partners' settings are checked as they would be.
SAMPLES = {
    "STACKADAPT_PIXEL_ID": "sqQHa3Ob1hFi__2EcYYVZg1",
    "TIKTOK_ACCESS_TOKEN": "b6c0f2e1d3a4958f7e6d5c4b3a291807",
    "TIKTOK_EVENT_SET_ID": "7312345678901234567",
    "SEG_WEBSITE_ID": "abc8fb18-7559-4324-9921-a4b5015b4a1c",
    "KAFKA_USERNAME": "streamproc",
    "KAFKA_PASSWORD": "kafka-password",
    "IMAGE_DIGEST": "sha256:" + "4b1e3f0c2d9a8b7c" * 4,
}
# Flags of `helm upgrade --install` that `helm template` has no use for (name -> takes a value).
INSTALL_ONLY = {
    "--install": False,
    "--wait": False,
    "--atomic": False,
    "--create-namespace": False,
    "--timeout": True,
}


@dataclass
class Secret:
    namespace: str
    name: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class InstallPath:
    doc: Path
    line: int
    namespace: str
    helm_args: list[str]
    secrets: dict[tuple[str, str], Secret]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """(line, words) of every command in the ```sh blocks, backslash continuations joined."""
    out: list[tuple[int, list[str]]] = []
    for block in re.finditer(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.S | re.M):
        first_line = text.count("\n", 0, block.start(1)) + 1
        pending, start = "", 0
        for i, line in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first_line + i
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            words = shlex.split(pending, comments=True)
            pending = ""
            if words:
                out.append((start, words))
    return out


def expand(word: str, where: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in SAMPLES, f"{where}: the docs use ${name}; add a realistic sample value to SAMPLES"
        return SAMPLES[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", value, word)


def namespace_of(words: list[str]) -> str:
    for i, w in enumerate(words):
        if w in ("-n", "--namespace"):
            return words[i + 1]
        if w.startswith("--namespace="):
            return w.split("=", 1)[1]
    return "default"


def parse_secret(words: list[str], where: str) -> Secret:
    name = words[words.index("generic") + 1]
    secret = Secret(namespace_of(words), name)
    it = iter(words)
    for w in it:
        for flag in ("--from-literal", "--from-file"):
            if w == flag:
                w = f"{flag}={next(it)}"
            if w.startswith(flag + "="):
                spec = w.split("=", 1)[1]
                if flag == "--from-literal":
                    key, _, value = spec.partition("=")
                    secret.data[key] = expand(value, where)
                else:
                    key = spec.split("=", 1)[0] if "=" in spec else Path(spec).name
                    secret.data[key] = f"(contents of {spec})"
    return secret


def helm_template_args(words: list[str]) -> tuple[str, list[str]]:
    """The release's namespace and `helm template` arguments of a `helm upgrade --install` command."""
    rest = words[words.index("upgrade") + 1 :]
    args: list[str] = []
    positional: list[str] = []
    it = iter(rest)
    for w in it:
        if w in INSTALL_ONLY:
            if INSTALL_ONLY[w]:
                next(it)
        elif w.startswith("-"):
            args.append(w)
            if "=" not in w and w not in ("--devel",):
                args.append(next(it))
        else:
            positional.append(w)
    release, chart = positional
    assert chart == CHART_PATH, chart
    return namespace_of(args), [release, *args]


def install_paths() -> list[InstallPath]:
    paths: list[InstallPath] = []
    for doc in DOCS:
        secrets: dict[tuple[str, str], Secret] = {}
        for line, words in shell_commands(doc.read_text()):
            where = f"{doc.relative_to(ROOT)}:{line}"
            if words[0] == "kubectl" and "secret" in words and "generic" in words:
                s = parse_secret(words, where)
                secrets[(s.namespace, s.name)] = s
            elif words[:2] == ["helm", "upgrade"] and "--install" in words:
                ns, args = helm_template_args([expand(w, where) for w in words])
                paths.append(InstallPath(doc, line, ns, args, dict(secrets)))
    return paths


PATHS = install_paths()


def test_the_docs_show_installs_for_every_values_file_they_name() -> None:
    assert PATHS, "no `helm upgrade --install` found in the docs"
    named = {m for doc in DOCS for m in re.findall(r"ci/[a-z0-9-]+-values\.yaml", doc.read_text())}
    installed = {
        a.split("streamproc/", 1)[1] for p in PATHS for a in p.helm_args if a.endswith("-values.yaml")
    }
    assert named <= installed, f"values files named but never installed in a shell block: {named - installed}"


def pod_environment(pod: dict[str, Any], container: dict[str, Any], path: InstallPath) -> dict[str, str]:
    """The environment Kubernetes would give the container, from the secrets the docs created."""

    def secret(name: str, optional: bool) -> Secret | None:
        found = path.secrets.get((path.namespace, name))
        assert found is not None or optional, (
            f"{path.id}: the pod reads secret {name!r}, which the docs never create in {path.namespace!r}"
        )
        return found

    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source["secretRef"]
        found = secret(ref["name"], ref.get("optional", False))
        env.update({source.get("prefix", "") + k: v for k, v in (found.data if found else {}).items()})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        src = var["valueFrom"]
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            found = secret(ref["name"], ref.get("optional", False))
            if found is not None:
                assert ref["key"] in found.data, (
                    f"{path.id}: {var['name']} reads key {ref['key']!r} of secret {ref['name']!r}; the docs"
                    f" create only {sorted(found.data)}"
                )
                env[var["name"]] = found.data[ref["key"]]
        elif "fieldRef" in src:
            fields = {"metadata.name": "streamproc-6d4cf56db6-x7k2p", "metadata.namespace": path.namespace}
            env[var["name"]] = fields[src["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"{path.id}: {var['name']} comes from {sorted(src)}, not handled here")
    return env


def mounted_secret_files(pod: dict[str, Any], container: dict[str, Any], path: InstallPath) -> set[str]:
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    files: set[str] = set()
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            found = path.secrets.get((path.namespace, volume["secret"]["secretName"]))
            assert found is not None, (
                f"{path.id}: the pod mounts secret {volume['secret']['secretName']!r}, which the docs never"
                " create"
            )
            files |= {f"{mount['mountPath'].rstrip('/')}/{key}" for key in found.data}
    return files


@pytest.mark.parametrize("path", PATHS, ids=[p.id for p in PATHS])
def test_a_documented_install_passes_check_in_the_pods_environment(
    path: InstallPath, render: Render, tmp_path: Path
) -> None:
    release, *args = path.helm_args
    docs = render(*args, release=release, namespace=path.namespace)
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    config_text = configmap["data"]["config.yaml"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_text)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert any(d["kind"] == "Deployment" for d in workloads)
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = pod_environment(pod, container, path)
        files = mounted_secret_files(pod, container, path)
        client = (yaml.safe_load(config_text)["kafka"].get("client")) or {}
        for key, value in client.items():
            if key.endswith(".location") and str(value).startswith("/etc/streamproc/kafka-tls"):
                assert value in files, f"{path.id}: {key} {value} is not in a secret the docs create"
        proc = subprocess.run(
            [sys.executable, "-m", "streamproc", "check", "--config", str(config_file)],
            env={"PATH": os.environ.get("PATH", ""), **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (
            f"{path.id} ({workload['kind']} {workload['metadata']['name']}): streamproc check fails in the"
            f" pod's environment {sorted(env)}:\n{proc.stdout}{proc.stderr}"
        )
