"""``mdctr models list|promote|rollback`` against a real SQLite MLflow store with real registered versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mdctr import tracking
from mdctr.cli import app
from mdctr.models import model_names
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.tracking.names import CHALLENGER, CHAMPION, HISTORY_TAG_PREFIX, registered_model_name

pytestmark = pytest.mark.integration
#: the demo bundle's dataset registers under its own model
NAME = registered_model_name(DEMO_SCHEMA.name)


def _cli(*args: str) -> tuple[int, str, str]:
    out = CliRunner().invoke(app, ["models", *args])
    return out.exit_code, out.stdout, out.stderr


def test_list_shows_versions_metrics_and_aliases_without_the_zoo(store: str) -> None:
    code, out, _ = _cli("list", "--tracking-uri", store)
    assert code == 0, out
    lines = out.splitlines()
    # the registered models come first: the zoo is its own command now
    assert lines[0] == f"tracking store: {store}" and lines[1] == f"registered model {NAME}: 2 version(s)"
    assert "model zoo" not in out and not any(line.split()[0] == "hamur" for line in lines if line.strip())
    table = lines[lines.index(f"registered model {NAME}: 2 version(s)") + 1 :]
    rows = {line.split()[0]: line.split() for line in table if line.startswith("  ")}
    assert rows["2"][1:6] == [CHALLENGER, "dnn", "none", "0.7200", "0.6000"]
    assert rows["1"][1:6] == [CHAMPION, "dnn", "none", "0.7000", "0.6000"]
    assert rows["2"][6:9] == ["0:0.710", "1:0.720", "2:0.700"]
    assert rows["1"][9] == "promote"  # the gate's decision on version 1

    data = json.loads(_cli("list", "--tracking-uri", store, "--json")[1])
    assert "zoo" not in data
    assert [m["name"] for m in data["registered_models"]] == [NAME]
    versions = data["registered_models"][0]["versions"]
    assert [v["version"] for v in versions] == ["2", "1"]
    assert versions[0]["metrics"] == {"auc": 0.72, "logloss": 0.6}
    assert versions[0]["domain_metrics"]["1"] == {"auc": 0.72, "logloss": 0.6}


def test_list_without_a_store_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    code, out, _ = _cli("list", "--tracking-uri", f"sqlite:///{missing}")
    assert code == 0
    assert out.splitlines() == [
        f"tracking store: unavailable (no tracking store at sqlite:///{missing} "
        "(the SQLite file does not exist))"
    ]
    assert not missing.parent.exists()
    # a server that does not answer: said quickly (no retries)
    code, out, _ = _cli("list", "--tracking-uri", "http://127.0.0.1:9")
    assert code == 0 and "tracking store: unavailable" in out and "not reachable" in out


def test_zoo_lists_the_trainable_models_without_a_store() -> None:
    code, out, _ = _cli("zoo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "model zoo (registry keys):" and len(lines) == len(model_names()) + 1
    assert [line.split()[0] for line in lines[1:]] == model_names()
    data = json.loads(_cli("zoo", "--json")[1])
    assert [z["model"] for z in data] == model_names() and all("domain_sources" in z for z in data)


def test_promote_runs_the_gate_then_rollback_restores_the_previous_champion(store: str) -> None:
    c = MlflowClient(store)
    code, out, _ = _cli("promote", "2", "--tracking-uri", store)
    assert code == 0, out
    assert out.startswith(f"{NAME} v2 is now champion (was v1): overall auc improves by +0.02000")
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"
    assert c.get_model_version(NAME, "2").tags["gate.decision"] == "promote"
    assert c.get_model_version(NAME, "2").tags["promotion.previous"] == "1"

    code, out, _ = _cli("promote", "2", "--tracking-uri", store)
    assert code == 0 and out.strip() == "version 2 is already the champion"

    code, out, _ = _cli("rollback", "--reason", "v2 doubles latency", "--tracking-uri", store)
    assert code == 0, out
    assert out.strip() == f"{NAME} champion rolled back to v1 (was v2): v2 doubles latency"
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"
    assert c.get_model_version(NAME, "2").tags["promotion.rolled_back"] == "v2 doubles latency"

    # the alias history is kept as registered-model tags, oldest first (the fixture's promotion included)
    history = tracking_history(c)
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
    ]
    code, out, _ = _cli("list", "--tracking-uri", store)
    assert "champion history (oldest first):" in out and "rollback v1 (was v2): v2 doubles latency" in out

    # version 1 was the first champion: nothing before it
    code, _, err = _cli("rollback", "--tracking-uri", store)
    assert code == 2 and "champion v1 has no previous champion to roll back to" in err
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"


def test_a_refused_promotion_exits_1_and_force_needs_a_reason(store: str) -> None:
    c = MlflowClient(store)
    # version 1 cannot replace itself; make 2 champion, then try to go back to 1 through the gate
    assert _cli("promote", "2", "--tracking-uri", store)[0] == 0
    code, _, err = _cli("promote", "1", "--tracking-uri", store)
    assert code == 1
    assert f"gate refused {NAME} v1: overall auc 0.70000 does not beat champion v2 (0.72000)" in err
    assert "champion stays v2" in err
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"

    code, _, err = _cli("promote", "1", "--force", "--tracking-uri", store)
    assert code == 2 and "a forced promotion needs a reason" in err
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"

    code, out, _ = _cli(
        "promote", "1", "--force", "--reason", "v2 breaks the iOS client", "--tracking-uri", store
    )
    assert code == 0, out
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"
    tags = c.get_model_version(NAME, "1").tags
    assert tags["promotion.forced"] == "true"
    assert tags["promotion.reason"].startswith("forced: v2 breaks the iOS client (gate: overall auc 0.70000")
    assert tracking_history(c)[-1]["action"] == "force"

    # rolling back a forced promotion returns to the champion it displaced
    assert _cli("rollback", "--tracking-uri", store)[0] == 0
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "2"


def test_unknown_version_and_missing_store_are_one_line_errors(store: str, tmp_path: Path) -> None:
    code, _, err = _cli("promote", "7", "--tracking-uri", store)
    assert code == 2 and err.strip() == f"error: {NAME} has no version '7'; registered versions: ['1', '2']"
    code, _, err = _cli("rollback", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no tracking store at" in err and not (tmp_path / "none.db").exists()


def test_rollback_of_a_pipeline_promotion_reads_the_history_not_the_gate_tags(store: str) -> None:
    """The pipeline promotes with the gate and ``promote``, which writes the champion history: rollback finds
    the previous champion there, not in the gate's ``gate.champion_version`` tag (no fallback on it)."""
    gate = tracking.decide_promotion(store, "2", name=NAME)
    assert gate.promote
    tracking.promote(store, "2", name=NAME, reason=gate.reason)
    assert [(e["action"], e["version"]) for e in tracking_history(MlflowClient(store))][-1] == (
        "promote",
        "2",
    )
    MlflowClient(store).set_model_version_tag(NAME, "2", "gate.champion_version", "7")  # ignored
    code, out, _ = _cli("rollback", "--tracking-uri", store)
    assert code == 0 and out.startswith(f"{NAME} champion rolled back to v1 (was v2)")


def tracking_history(c: MlflowClient) -> list[dict]:
    tags = c.get_registered_model(NAME).tags
    return [json.loads(tags[k]) for k in sorted(tags) if k.startswith(HISTORY_TAG_PREFIX)]


def test_model_card_carries_data_version_flops_domains_and_gate_reason(store: str, tmp_path: Path) -> None:
    from mdctr.tracking.model_card import write_model_card
    from mdctr.tracking.names import TAG_MODEL_CARD

    uri = write_model_card(store, "2", name=NAME)
    c = MlflowClient(store)
    assert c.get_model_version(NAME, "2").tags[TAG_MODEL_CARD] == uri
    run_id = uri.split("/")[1]
    card = Path(c.download_artifacts(run_id, "model_card/v2.md", str(tmp_path))).read_text()
    assert card.startswith(f"# {NAME} version 2\n")
    assert "| data version | DVC rev `v7`, md5 `0123abcd` |" in card
    assert "| code version | git `c0ffee` |" in card
    assert "| forward FLOPs per sample | 52,224 |" in card and "| dense parameters | 25,921 |" in card
    assert "| auc | 0.72000 |" in card
    assert "| 1 | middle | 0.72000 | 0.60000 |" in card
    assert "The gate has not been run on this version." in card

    # promotion refreshes the card with the gate's decision and reason
    assert _cli("promote", "2", "--tracking-uri", store)[0] == 0
    card = Path(c.download_artifacts(run_id, "model_card/v2.md", str(tmp_path / "again"))).read_text()
    assert "- decision: **promote** — overall auc improves by +0.02000 over v1" in card
    assert "| aliases | challenger, champion |" in card


def test_with_two_datasets_the_commands_need_dataset_or_name(
    store: str, demo_bundle: DemoBundle, tmp_path: Path, with_metrics: Any
) -> None:
    """A second dataset registers its own model: ``list`` shows both, ``--dataset``/``--name`` pick one, and
    ``promote``/``rollback`` without either refuse instead of guessing."""
    import dataclasses

    from mdctr.data.encode import FeatureSpec
    from mdctr.serving.bundle import SPEC_FILE

    shop = with_metrics(demo_bundle, tmp_path / "shop", 0.60, (0.6, 0.6, 0.6))
    spec = FeatureSpec.load(shop / SPEC_FILE)
    dataclasses.replace(spec, schema=dataclasses.replace(spec.schema, name="shop")).save(shop / SPEC_FILE)
    run = MlflowClient(store).get_model_version(NAME, "1").run_id
    assert (
        tracking.register_bundle(store, shop, run_id=run, input_example=demo_bundle.table).name
        == "mdctr-shop"
    )

    code, out, _ = _cli("list", "--tracking-uri", store)
    assert (
        code == 0
        and "registered model mdctr-shop: 1 version(s)" in out
        and f"registered model {NAME}: 2" in out
    )
    code, out, _ = _cli("list", "--dataset", "shop", "--tracking-uri", store)
    assert code == 0 and "registered model mdctr-shop: 1 version(s)" in out and NAME not in out

    code, _, err = _cli("promote", "2", "--tracking-uri", store)
    assert code == 2 and f"2 registered models ['{NAME}', 'mdctr-shop']: pass --dataset or --name" in err
    assert tracking.alias_version(store, CHAMPION, name=NAME) == "1"

    # version 1 of the shop model is gated against the shop model only (it has no champion yet), although
    # its 0.60 is far below the demo champion's 0.70
    code, out, _ = _cli("promote", "1", "--dataset", "shop", "--tracking-uri", store)
    assert code == 0 and out.startswith("mdctr-shop v1 is now champion (was none): no champion yet")
    code, out, _ = _cli("promote", "2", "--name", NAME, "--tracking-uri", store)
    assert code == 0 and out.startswith(f"{NAME} v2 is now champion (was v1)")
    assert tracking.alias_version(store, CHAMPION, name="mdctr-shop") == "1"

    code, _, err = _cli("rollback", "--tracking-uri", store)
    assert code == 2 and "pass --dataset or --name" in err
    code, out, _ = _cli("rollback", "--dataset", "demo", "--tracking-uri", store)
    assert code == 0 and out.startswith(f"{NAME} champion rolled back to v1 (was v2)")
    assert tracking.alias_version(store, CHAMPION, name="mdctr-shop") == "1"
