"""submit_and_wait through the real kubernetes client against the stand-in API server (tests/deploy/conftest.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client

from mdctr.trainjob import PLURAL, TrainJobFailed, job_name, submit_and_wait, trainjob_spec

NS = "team-a"


def _client(api: Any) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = api.url
    return client.ApiClient(cfg)


def _spec(name: str = "mdctr-dnn-none-s0-abc") -> dict[str, Any]:
    return trainjob_spec(
        name=name, model="dnn", domain_source="none", prepared_uri="/d", output_uri="/o", image="img:1"
    )


def _finish_later(api: Any, type_: str, delay: float, **kw: str) -> Any:
    def runner(a: Any, obj: dict[str, Any]) -> None:
        time.sleep(delay)
        a.set_condition(obj["metadata"]["namespace"], obj["metadata"]["name"], type_, **kw)

    return runner


def test_a_completed_job_is_returned_after_watching_it(kube_api: Any) -> None:
    kube_api.runner = _finish_later(kube_api, "Complete", 1.0, reason="JobsCompleted")
    t0 = time.monotonic()
    job = submit_and_wait(_spec(), namespace=NS, api_client=_client(kube_api))
    waited = time.monotonic() - t0
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    assert len(kube_api.created) == 1 and kube_api.created[0]["metadata"]["namespace"] == NS
    paths = [p for m, p in kube_api.requests if m == "GET"]
    # it watched the one job (a field selector on its name) instead of polling in a loop
    assert any("watch=true" in p.lower() and "metadata.name%3Dmdctr-dnn-none-s0-abc" in p for p in paths), (
        paths
    )
    assert len(paths) <= 4, paths
    assert 0.9 <= waited < 10


def test_a_failed_job_raises_an_error_naming_it_and_its_reason(kube_api: Any) -> None:
    kube_api.runner = _finish_later(
        kube_api, "Failed", 0.2, reason="FailedJobs", message="node-1 exited with code 1: CUDA out of memory"
    )
    with pytest.raises(TrainJobFailed) as err:
        submit_and_wait(_spec(), namespace=NS, api_client=_client(kube_api))
    msg = str(err.value)
    assert "TrainJob team-a/mdctr-dnn-none-s0-abc failed" in msg
    assert "FailedJobs: node-1 exited with code 1: CUDA out of memory" in msg
    assert "kubectl -n team-a logs -l jobset.sigs.k8s.io/jobset-name=mdctr-dnn-none-s0-abc" in msg


def test_a_schema_violation_is_refused_by_the_server_and_named(kube_api: Any) -> None:
    spec = _spec()
    spec["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(
        RuntimeError, match=r"creating TrainJob team-a/mdctr-dnn-none-s0-abc was refused: HTTP 422"
    ):
        submit_and_wait(spec, namespace=NS, api_client=_client(kube_api))


def test_a_retried_task_waits_for_the_job_its_first_try_created(kube_api: Any) -> None:
    spec = _spec()
    kube_api.put(NS, spec)
    kube_api.runner = None
    threading.Timer(0.5, kube_api.set_condition, (NS, spec["metadata"]["name"], "Complete")).start()
    job = submit_and_wait(spec, namespace=NS, api_client=_client(kube_api))
    assert job["status"]["conditions"][-1]["type"] == "Complete"
    assert kube_api.created == []  # not a second job


def test_a_job_that_failed_before_is_deleted_and_created_again(kube_api: Any) -> None:
    spec = _spec()
    kube_api.put(NS, spec)
    kube_api.set_condition(NS, spec["metadata"]["name"], "Failed", "FailedJobs", "node preempted")
    kube_api.runner = _finish_later(kube_api, "Complete", 0.2)
    job = submit_and_wait(spec, namespace=NS, api_client=_client(kube_api))
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    assert (
        "DELETE",
        f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/{PLURAL}/{spec['metadata']['name']}",
    ) in (kube_api.requests)
    assert len(kube_api.created) == 1


def test_a_job_past_the_timeout_is_deleted(kube_api: Any) -> None:
    kube_api.runner = None  # never finishes
    with pytest.raises(
        TimeoutError, match=r"TrainJob team-a/mdctr-dnn-none-s0-abc did not finish within 2 s"
    ):
        submit_and_wait(_spec(), namespace=NS, api_client=_client(kube_api), timeout_s=2, watch_timeout_s=1)
    assert kube_api.objects == {}


def test_job_names_are_dns_labels_stable_per_output_location() -> None:
    a = job_name("adaptive2", "handcrafted", 2, "s3://b/kfp/run-1/train-model-x/results.trainjob")
    assert a == job_name("adaptive2", "handcrafted", 2, "s3://b/kfp/run-1/train-model-x/results.trainjob")
    assert a != job_name("adaptive2", "handcrafted", 2, "s3://b/kfp/run-2/train-model-x/results.trainjob")
    assert a.startswith("mdctr-adaptive2-handcrafted-s2-")
    long = job_name("Some_Very_Long_Model_Name_" * 3, "binned", 10, "k")
    _spec(long)  # trainjob_spec checks the DNS-1035 rule
    assert len(long) <= 63
