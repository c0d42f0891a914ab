"""Planted drift is flagged (a domain's share tripled, an unseen-id flood), a clean replay is not, labels
joined by request id give sklearn's per-domain AUC, and the statistics behave."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mdctr.monitoring.logsource import Window
from mdctr.monitoring.run import MonitorConfig, MonitorResult, build_reference, monitor
from mdctr.monitoring.stats import Quantiles, Reservoir, psi
from mdctr.schema import SchemaError


def _run(traffic: Any, log: Path, tmp_path: Path, **kw: Any) -> MonitorResult:
    cfg = MonitorConfig(gx_rows=kw.pop("gx_rows", 0))
    ref = build_reference(traffic.prepared, cfg, reference_codes=traffic.codes)
    return monitor(Window(str(log)), ref, cfg, validation_dir=tmp_path / "gx", **kw)


def test_clean_replay_is_not_flagged(traffic: Any, tmp_path: Path) -> None:
    result = _run(traffic, traffic.write(traffic.test), tmp_path, gx_rows=2000)
    assert result.rows == len(traffic.test)
    assert result.breaches == ()
    assert result.handcrafted.psi < 0.02 and result.mined.psi < 0.02
    assert all(f.psi < 0.05 for f in result.features), [(f.feature, f.psi) for f in result.features]
    assert result.validation is not None and result.validation["success"]


def _tripled(test: pd.DataFrame, mask: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """``test`` resampled (same size) with the rows in ``mask`` three times as likely."""
    w = np.where(mask, 3.0, 1.0)
    idx = np.random.default_rng(seed).choice(len(test), size=len(test), p=w / w.sum())
    return test.iloc[idx].reset_index(drop=True)


def test_tripled_handcrafted_domain_share_is_flagged(traffic: Any, tmp_path: Path) -> None:
    test = traffic.test
    window = _tripled(test, (test[traffic.schema.domain] == 1).to_numpy())
    result = _run(traffic, traffic.write(window), tmp_path)
    hc = result.handcrafted
    assert hc.ratio is not None and 1.8 < hc.ratio[1] < 2.6  # 3x the odds: share p → 3p / (1 + 2p)
    assert hc.psi > MonitorConfig().max_domain_psi
    assert any(b.startswith("handcrafted domain shares") and "'d1'" in b for b in result.breaches), (
        result.breaches
    )


def test_tripled_mined_code_share_is_flagged(traffic: Any, tmp_path: Path) -> None:
    test = traffic.test
    window = _tripled(test, traffic.code(test) == 2)
    result = _run(traffic, traffic.write(window), tmp_path)
    assert result.mined.reference is not None and result.mined.psi > MonitorConfig().max_domain_psi
    assert any(b.startswith("mined domain shares") and "'code 2'" in b for b in result.breaches), (
        result.breaches
    )


def test_unseen_id_flood_is_flagged_as_oov(traffic: Any, tmp_path: Path) -> None:
    window = traffic.test.copy()
    flood = np.random.default_rng(1).random(len(window)) < 0.3
    window.loc[flood, "f1"] = 1_000_000 + np.arange(int(flood.sum()))
    result = _run(traffic, traffic.write(window), tmp_path)
    f1 = next(f for f in result.features if f.feature == "f1")
    assert f1.oov_share == pytest.approx(flood.mean(), abs=1e-9)
    assert f1.bins[-1][0] == "(OOV)" and f1.bins[-1][1] == 0.0
    assert any("'f1': OOV share" in b for b in result.breaches), result.breaches
    assert not any("'f2'" in b for b in result.breaches)


def test_labels_join_gives_sklearn_per_domain_auc(traffic: Any, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from mdctr.monitoring.replay import request_ids

    test = traffic.test
    label = test[traffic.schema.label].to_numpy()
    rng = np.random.default_rng(5)
    pred = np.clip(0.3 * label + rng.uniform(0, 0.7, len(test)), 0.001, 0.999)
    log = traffic.write(test, prediction=pred)
    # request ids in row order (files are written in row order); labels for 80% of the rows, shuffled
    ids = np.asarray(request_ids(sorted(log.rglob("part-*.parquet"))))
    order = np.argsort([int(i.rsplit(":", 1)[1]) for i in ids])
    ids = ids[order]
    keep = rng.random(len(test)) < 0.8
    labels = pd.DataFrame({"mdctr_request_id": ids[keep], traffic.schema.label: label[keep]}).sample(frac=1.0)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = _run(traffic, log, tmp_path, labels_path=tmp_path / "labels.csv")
    assert result.labelled_rows == int(keep.sum())
    dom = test[traffic.schema.domain].to_numpy()
    got = {g.group: g for g in result.labels["handcrafted"]}
    for d, name in enumerate(traffic.schema.domain_names):
        rows = keep & (dom == d)
        assert got[name].rows == int(rows.sum())
        assert got[name].auc == pytest.approx(roc_auc_score(label[rows], pred[rows]), abs=1e-12)
        assert got[name].calibration == pytest.approx(pred[rows].mean() / label[rows].mean())
    buckets = result.labels["bucket"]
    assert [g.group for g in buckets] == ["2026-12-01", "2026-12-02"]
    assert sum(g.rows for g in buckets) == int(keep.sum())


def test_labels_file_with_repeated_ids_is_refused(traffic: Any, tmp_path: Path) -> None:
    from mdctr.monitoring.labels import read_labels

    path = tmp_path / "labels.csv"
    pd.DataFrame({"mdctr_request_id": ["a:0", "b:0", "a:0"], "label": [1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(
        SchemaError, match=r"labels.csv: column 'mdctr_request_id' repeats 1 request id\(s\) at row 3"
    ):
        read_labels(path, "label")
    pd.DataFrame({"mdctr_request_id": ["a:0"], "label": [2]}).to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"column 'label' must be 0/1"):
        read_labels(path, "label")


def test_window_bounds_keep_only_their_rows(traffic: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    log = traffic.write(traffic.test)
    cfg = MonitorConfig(gx_rows=0)
    ref = build_reference(traffic.prepared, cfg)
    day2 = datetime(2026, 12, 2, tzinfo=UTC)
    first = monitor(Window(str(log), until=day2), ref, cfg)
    second = monitor(Window(str(log), since=day2), ref, cfg)
    assert first.rows + second.rows == len(traffic.test) and first.rows > 0 and second.rows > 0
    assert second.served_from is not None and second.served_from >= day2.isoformat()
    assert math.isnan(first.mined.psi)  # no reference codes given: mined shares reported, not judged


def test_psi_reservoir_and_quantiles() -> None:
    assert psi([10, 10], [10, 10]) == 0.0
    assert psi([50, 50], [90, 10]) == pytest.approx((0.9 - 0.5) * math.log(1.8) + (0.1 - 0.5) * math.log(0.2))
    r = Reservoir(1000, seed=0)
    for start in range(0, 100_000, 7_000):
        r.add(np.arange(start, min(start + 7_000, 100_000), dtype=np.float64))
    sample = r.sample()
    assert len(sample) == 1000 and r.seen == 100_000 and len(np.unique(sample)) == 1000
    assert 40_000 < sample.mean() < 60_000  # uniform over the stream, not its first rows
    q = Quantiles.from_sample(np.array([1.0, 1.0, 1.0, 2.0, 3.0]), bins=10)
    # a discrete feature: its values are the edges, so each value has a bin of its own and none is split
    assert q.edges.tolist() == [1.0, 2.0] and q.counts(np.array([1.0, 2.0, 3.0, 1.0])).tolist() == [2, 1, 1]


def test_great_expectations_failure_on_the_window_is_a_breach(traffic: Any, tmp_path: Path) -> None:
    window = traffic.test.copy()
    window.loc[window.index[:50], "x0"] = np.nan  # the schema's dense columns may not be missing
    result = _run(traffic, traffic.write(window), tmp_path, gx_rows=len(window))
    assert result.validation is not None and not result.validation["success"]
    gx = [b for b in result.breaches if b.startswith("Great Expectations on the window")]
    assert len(gx) == 1 and "expect_column_values_to_not_be_null [x0]" in gx[0] and "50 row(s)" in gx[0], gx
    assert (tmp_path / "gx" / "validation_report.html").is_file()


def test_domain_shares_fall_back_to_the_request_domain_column(traffic: Any, tmp_path: Path) -> None:
    """A model that does not route by hand-crafted domains logs ``mdctr_domain`` as null: the shares then come
    from the domain column the requests carried, and match the routed log's."""
    from mdctr.monitoring.replay import write_log

    test = traffic.test
    n = len(test)
    write_log(
        test,
        traffic.schema,
        tmp_path / "log",
        served_ms=np.full(n, 1_796_083_200_000),
        prediction=np.full(n, 0.5),
        route_handcrafted=False,
    )
    unrouted = _run(traffic, tmp_path / "log", tmp_path)
    routed = _run(traffic, traffic.write(test), tmp_path)
    assert unrouted.handcrafted.window_rows == n
    assert unrouted.handcrafted.window == pytest.approx(routed.handcrafted.window)
    assert math.isnan(unrouted.mined.psi) and unrouted.mined.window_rows == 0


def test_a_per_feature_psi_limit_overrides_max_psi(traffic: Any, tmp_path: Path) -> None:
    """A feature whose population turns over (new ids every period) can have its own limit: its PSI is still
    reported, the other features keep the global limit; a limit for a column the data lacks is refused."""
    from mdctr.config import ConfigError
    from mdctr.steps.monitor import MonitorStepConfig
    from mdctr.steps.monitor import monitor as step

    window = traffic.test.copy()
    counts = window["f1"].value_counts()
    window["f1"] = counts.index[0]  # every row the most common f1 value: a large PSI, no OOV
    log = traffic.write(window)
    strict = step(
        log_uri=str(log),
        reference_dir=traffic.prepared,
        out_dir=tmp_path / "a",
        config=MonitorStepConfig(gx_rows=0),
    )
    assert any(b.startswith("feature 'f1': PSI") for b in strict.breaches), strict.breaches
    relaxed = step(
        log_uri=str(log),
        reference_dir=traffic.prepared,
        out_dir=tmp_path / "b",
        config=MonitorStepConfig(gx_rows=0, feature_max_psi=(("f1", math.inf),)),
    )
    assert not any("'f1'" in b for b in relaxed.breaches), relaxed.breaches
    assert relaxed.metrics["psi.f1"] == strict.metrics["psi.f1"] > MonitorConfig().max_psi
    with pytest.raises(ConfigError, match=r"--feature-max-psi names \['nope'\]"):
        step(
            log_uri=str(log),
            reference_dir=traffic.prepared,
            out_dir=tmp_path / "c",
            config=MonitorStepConfig(gx_rows=0, feature_max_psi=(("nope", 1.0),)),
        )
