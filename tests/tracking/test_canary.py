"""Canary rollout through the real CLI on a real SQLite MLflow store: ``mdctr models promote V --canary P``,
``promote --finish``, ``rollback`` while a canary runs, and ``list`` showing the canary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mdctr import tracking
from mdctr.cli import app
from mdctr.serving.demo import DEMO_SCHEMA
from mdctr.tracking.names import CANARY, CHAMPION, registered_model_name

pytestmark = pytest.mark.integration
NAME = registered_model_name(DEMO_SCHEMA.name)


def _cli(*args: str) -> tuple[int, str, str]:
    out = CliRunner().invoke(app, ["models", *args])
    return out.exit_code, out.stdout, out.stderr


def _served(manifest: Path) -> dict[str, Any]:
    """What a manifest serves: the predictor spec's storage URI and canary percent, and the annotations."""
    m = yaml.safe_load(manifest.read_text())
    predictor = m["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}
    return {
        "storage": env["STORAGE_URI"],
        "percent": predictor.get("canaryTrafficPercent"),
        "annotations": m["metadata"]["annotations"],
    }


def _history(store: str) -> list[tuple[str, str, Any]]:
    return [
        (e["action"], e["version"], e.get("percent")) for e in tracking.champion_history(store, name=NAME)
    ]


def test_canary_then_finish_moves_the_champion_and_ends_the_canary(store: str, tmp_path: Path) -> None:
    storage = {v: tracking.model_storage_uri(store, v, name=NAME) for v in ("1", "2")}
    manifest = tmp_path / "k8s" / "isvc.yaml"
    code, out, err = _cli(
        "promote", "2", "--canary", "10", "--manifest", str(manifest), "--tracking-uri", store
    )
    assert code == 0, out + err
    assert out.splitlines() == [
        f"{NAME} v2 is the canary with 10% of traffic (champion v1 keeps 90%): overall auc improves by "
        "+0.02000 over v1 and no domain regresses by more than 0.002",
        f"KServe manifest: {manifest}",
    ]
    assert tracking.alias_version(store, CANARY, name=NAME) == "2"
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"  # the champion keeps serving
    # KServe canary semantics: the spec holds the canary's model and its percent; the champion is named
    served = _served(manifest)
    assert served["storage"] == storage["2"] and served["percent"] == 10
    assert served["annotations"]["mdctr/champion-version"] == "1"
    assert served["annotations"]["mdctr/champion-storage-uri"] == storage["1"]
    assert served["annotations"]["mdctr/canary-version"] == "2"

    code, out, _ = _cli("list", "--tracking-uri", store)
    assert code == 0 and "canary: v2 gets 10% of traffic, champion v1 the rest" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  2 ")}
    assert rows["2"][1] == f"{CANARY},challenger"
    assert "canary   v2 (10% beside champion v1): overall auc improves" in out
    data = json.loads(_cli("list", "--tracking-uri", store, "--json")[1])
    assert data["registered_models"][0]["rollout"] == {"champion": "1", "canary": "2", "percent": 10}

    # more traffic to the same canary: no second gate, a new history entry, the manifest rewritten
    code, out, _ = _cli(
        "promote", "2", "--canary", "50", "--manifest", str(manifest), "--tracking-uri", store
    )
    assert code == 0 and "v2 is the canary with 50% of traffic" in out
    assert _served(manifest)["percent"] == 50

    code, out, _ = _cli("promote", "--finish", "--manifest", str(manifest), "--tracking-uri", store)
    assert code == 0, out
    assert out.splitlines()[0] == f"{NAME} v2 is now champion (was v1): canary v2 finished"
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"
    assert tracking.alias_version(store, CANARY, name=NAME) is None
    served = _served(manifest)
    assert served["storage"] == storage["2"] and served["percent"] is None
    assert "mdctr/canary-version" not in served["annotations"]
    assert _history(store) == [
        ("promote", "1", None),
        ("canary", "2", 10),
        ("canary", "2", 50),
        ("finish", "2", None),
    ]
    assert "canary:" not in _cli("list", "--tracking-uri", store)[1]
    # a finished canary is a champion move like any other: rollback returns to v1
    code, out, _ = _cli("rollback", "--tracking-uri", store)
    assert code == 0 and out.startswith(f"{NAME} champion rolled back to v1 (was v2)")


def test_canary_then_rollback_keeps_the_champion(store: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # the default manifest path is relative: kserve/<model>.yaml
    code, out, _ = _cli("promote", "2", "--canary", "20", "--tracking-uri", store)
    assert code == 0, out
    manifest = tmp_path / "kserve" / f"{NAME}.yaml"
    assert out.splitlines()[-1] == f"KServe manifest: kserve/{NAME}.yaml"
    assert _served(manifest)["percent"] == 20

    code, out, _ = _cli("rollback", "--reason", "canary p99 too high", "--tracking-uri", store)
    assert code == 0, out
    assert out.splitlines()[0] == f"{NAME} canary v2 rolled back; champion stays v1: canary p99 too high"
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"
    assert tracking.alias_version(store, CANARY, name=NAME) is None
    served = _served(manifest)
    assert served["percent"] is None and served["storage"] == tracking.model_storage_uri(
        store, "1", name=NAME
    )
    assert _history(store)[-1] == ("canary-end", "2", None)
    tags = MlflowClient(store).get_model_version(NAME, "2").tags
    assert tags["promotion.rolled_back"] == "canary p99 too high"

    # with no canary left, rollback is the champion rollback of before: v1 was the first champion
    code, _, err = _cli("rollback", "--tracking-uri", store)
    assert code == 2 and "champion v1 has no previous champion to roll back to" in err


def test_canary_refusals_leave_the_aliases(store: str, tmp_path: Path) -> None:
    manifest = tmp_path / "isvc.yaml"
    args = ("--manifest", str(manifest), "--tracking-uri", store)
    # the champion itself, a percent out of range, finishing without a canary: one-line errors, exit 2
    for cmd, message in (
        (("promote", "1", "--canary", "10"), "version 1 is already the champion"),
        (("promote", "2", "--canary", "0"), "canary traffic must be a whole percent from 1 to 99, not 0"),
        (("promote", "2", "--canary", "100"), "not 100"),
        (("promote", "--finish"), f"{NAME} has no canary to finish"),
        (("promote",), "VERSION is required"),
        (("promote", "--finish", "--canary", "5"), "--finish takes neither --canary nor --force"),
    ):
        code, _, err = _cli(*cmd, *args)
        assert code == 2 and message in err, (cmd, err)
    assert not manifest.exists()
    assert tracking.alias_version(store, CANARY, name=NAME) is None
    # atomic: a manifest that cannot be written (its folder is a file) leaves no alias and no history entry
    (tmp_path / "a-file").write_text("")
    bad = str(tmp_path / "a-file" / "isvc.yaml")
    code, _, err = _cli("promote", "2", "--canary", "10", "--manifest", bad, "--tracking-uri", store)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "a-file" in err
    assert tracking.alias_version(store, CANARY, name=NAME) is None
    assert _history(store) == [("promote", "1", None)]

    # the gate applies to a canary: v1 (0.70) may not be the canary of v2 (0.72) without --force
    assert _cli("promote", "2", "--tracking-uri", store)[0] == 0
    code, _, err = _cli("promote", "1", "--canary", "10", *args)
    assert code == 1 and "gate refused" in err and "does not beat champion v2" in err
    assert tracking.alias_version(store, CANARY, name=NAME) is None and not manifest.exists()
    code, out, _ = _cli("promote", "1", "--canary", "10", "--force", "--reason", "shadow test", *args)
    assert code == 0 and "v1 is the canary with 10% of traffic" in out and "forced: shadow test" in out
    # one canary at a time; finishing names the canary's version only
    code, _, err = _cli("promote", "--finish", "2", *args)
    assert code == 2 and "v2 is not the canary" in err and "(v1 is)" in err


def test_a_pipeline_promotion_supersedes_a_running_canary(
    store: str, tmp_path: Path, with_metrics: Any, demo_bundle: Any
) -> None:
    """The pipeline's promote step moves the champion while a canary runs: the new champion takes all traffic
    (its manifest has no canary) and the canary alias goes, with a history entry saying why."""
    from mdctr.steps.promote_model import PromoteConfig, promote_model

    assert (
        _cli(
            "promote", "2", "--canary", "10", "--manifest", str(tmp_path / "c.yaml"), "--tracking-uri", store
        )[0]
        == 0
    )
    run = MlflowClient(store).get_model_version(NAME, "1").run_id
    bundle = with_metrics(demo_bundle, tmp_path / "v3", 0.75, (0.75, 0.75, 0.75))
    v3 = tracking.register_bundle(store, bundle, run_id=run, input_example=demo_bundle.table).version
    out = promote_model(
        manifest_path=tmp_path / "pipeline.yaml",
        config=PromoteConfig(name=NAME, version=v3, tracking_uri=store, reason="gate: promote"),
    )
    assert "canaryTrafficPercent" not in yaml.safe_load(out.manifest_path.read_text())["spec"]["predictor"]
    assert tracking.alias_version(store, CHAMPION, name=NAME) == v3
    assert tracking.alias_version(store, CANARY, name=NAME) is None
    events = tracking.champion_history(store, name=NAME)
    assert [(e["action"], e["version"]) for e in events[-2:]] == [("promote", v3), ("canary-end", "2")]
    assert events[-1]["reason"] == f"superseded: v{v3} became champion"


def test_the_pipeline_promote_step_starts_a_canary_when_asked(store: str, tmp_path: Path) -> None:
    """``canary_percent`` on the promote step: the gate-passed version becomes the canary beside the champion
    (no second gate: the pipeline's reason is recorded), the manifest splits the traffic; ``--finish`` then
    completes it as for a manual canary."""
    from mdctr.steps.promote_model import PromoteConfig, promote_model

    out = promote_model(
        manifest_path=tmp_path / "pipeline.yaml",
        config=PromoteConfig(
            name=NAME, version="2", tracking_uri=store, reason="gate: promote (validation)", canary_percent=20
        ),
    )
    assert out.alias == CANARY
    assert yaml.safe_load(out.manifest_path.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert tracking.alias_version(store, CANARY, name=NAME) == "2"
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"
    last = tracking.champion_history(store, name=NAME)[-1]
    assert (last["action"], last["version"], last["percent"]) == ("canary", "2", 20)
    assert last["reason"] == "gate: promote (validation)"
    code, out_text, err = _cli(
        "promote", "--finish", "--manifest", str(tmp_path / "f.yaml"), "--tracking-uri", store
    )
    assert code == 0, out_text + err
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"
    assert tracking.alias_version(store, CANARY, name=NAME) is None


def test_the_promote_step_makes_the_first_version_champion_even_with_a_canary_percent(
    tmp_path: Path, demo_bundle: Any, with_metrics: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's first version has no champion to share traffic with: it becomes champion. With
    ``$MDCTR_REQUEST_LOG`` set, the manifest's container logs its requests there."""
    monkeypatch.setenv("MDCTR_REQUEST_LOG", "s3://logs/demo")
    monkeypatch.setenv("MDCTR_REQUEST_LOG_SAMPLE", "0.5")
    from mdctr.steps.promote_model import PromoteConfig, promote_model

    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_parent_run(
        uri, run_name="pipeline", params={"dataset": "demo"}, data_rev="v1", data_md5="00", git_sha="c0ffee"
    )
    run = tracking.log_training_run(
        uri,
        parent,
        run_name="dnn-none",
        params={"model": "dnn"},
        history=[],
        metrics={"auc": 0.7},
        per_domain=[],
    )
    bundle = with_metrics(demo_bundle, tmp_path / "v1", 0.7, (0.7, 0.7, 0.7))
    version = tracking.register_bundle(uri, bundle, run_id=run, input_example=demo_bundle.table).version
    out = promote_model(
        manifest_path=tmp_path / "m.yaml",
        config=PromoteConfig(name=NAME, version=version, tracking_uri=uri, canary_percent=10),
    )
    assert out.alias == CHAMPION
    predictor = yaml.safe_load(out.manifest_path.read_text())["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    env = {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}
    assert env["MDCTR_SERVE_LOG"] == "s3://logs/demo" and env["MDCTR_SERVE_LOG_SAMPLE"] == "0.5"
    assert tracking.alias_version(uri, CHAMPION, name=NAME) == version
    with pytest.raises(ValueError, match="canary_percent must be 0"):
        PromoteConfig(name=NAME, version=version, canary_percent=100)
