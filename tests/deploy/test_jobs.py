"""Replay and redrive Jobs are safe to leave enabled: one Job per distinct run, progress kept in Kafka."""

from __future__ import annotations

import pytest
from helm_render import CHART, Render, RenderError

JOBS = str(CHART / "ci" / "jobs-values.yaml")


def jobs(docs: list) -> dict[str, dict]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "Job"}


def names(docs: list) -> dict[str, str]:
    return {component: job["metadata"]["name"] for component, job in jobs(docs).items()}


def replay_args(docs: list) -> list[str]:
    return jobs(docs)["replay"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_an_unrelated_upgrade_keeps_the_same_jobs(render: Render) -> None:
    before = names(render("-f", JOBS))
    assert set(before) == {"replay", "dlq-redrive"}
    for unrelated in (
        ["--set", "replicaCount=5"],
        ["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"],
        ["--set", "autoscaling.hpa.enabled=true"],
        ["--set", "podDisruptionBudget.maxUnavailable=2"],
    ):
        assert names(render("-f", JOBS, *unrelated)) == before, unrelated


def test_a_job_is_replaced_only_when_what_it_runs_changes(render: Render) -> None:
    before = names(render("-f", JOBS))
    other_range = names(render("-f", JOBS, "--set", "jobs.replay.args={--from,2026-03-05T00:00:00Z}"))
    assert other_range["replay"] != before["replay"] and other_range["dlq-redrive"] == before["dlq-redrive"]
    new_image = names(render("-f", JOBS, "--set", "image.tag=0.2.0"))
    assert new_image["replay"] != before["replay"] and new_image["dlq-redrive"] != before["dlq-redrive"]


def test_the_replay_keeps_its_progress_in_a_group_named_after_its_arguments(render: Render) -> None:
    args = replay_args(render("-f", JOBS))
    group = args[args.index("--progress-group") + 1]
    assert group.startswith("streamproc.replay.") and "--state" not in args
    # A new image (a replaced Job) resumes the same replay; another range is another replay.
    assert replay_args(render("-f", JOBS, "--set", "image.tag=0.2.0")) == args
    other = replay_args(render("-f", JOBS, "--set", "jobs.replay.args={--from,2026-03-05T00:00:00Z}"))
    assert other[other.index("--progress-group") + 1] != group


def test_a_state_file_in_the_pod_is_refused(render: Render) -> None:
    with pytest.raises(RenderError, match="--state keeps progress in a file of the pod"):
        render("-f", JOBS, "--set", "jobs.replay.args={--state,/tmp/replay-state.json}")


def test_no_job_template_depends_on_the_release_revision() -> None:
    for path in (CHART / "templates").iterdir():
        assert ".Release.Revision" not in path.read_text(), path.name
