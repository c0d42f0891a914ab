"""The per-feature domain report: dense bins fitted on train, the chance level of NMI, each feature's most
over-represented value per code, and the Markdown that renders them."""

from __future__ import annotations

import numpy as np
import pytest

from mdctr.data.prepare import PreparedData
from mdctr.domains.report import (
    MIN_SHARE_IN_CODE,
    dense_bin_edges,
    domain_report,
    raw_dense,
    report_markdown,
)


def test_dense_bins_come_from_the_given_edges(small_prepared: PreparedData) -> None:
    """Codes = train-decile bins of a dense feature on the test rows: NMI 1 only with the train edges passed."""
    spec, train, test = small_prepared.spec, small_prepared.train, small_prepared.test
    col = spec.schema.dense[0]
    edges = dense_bin_edges(train, spec)
    assert set(edges) == set(spec.schema.dense) and len(edges[col]) == 9  # 9 inner deciles
    codes = np.digitize(raw_dense(test, spec)[col], edges[col])
    with_train_edges = domain_report(codes, test, spec, dense_edges=edges)
    assert with_train_edges["feature_nmi"][col] == pytest.approx(1.0)
    # shifted edges bin the same rows differently: the agreement drops (the edges are really used)
    shifted = {k: v + 0.5 * np.diff(v).mean() for k, v in edges.items()}
    assert domain_report(codes, test, spec, dense_edges=shifted)["feature_nmi"][col] < 0.95


def test_chance_nmi_is_the_level_random_codes_reach(small_prepared) -> None:
    spec, train = small_prepared.spec, small_prepared.train
    col = spec.schema.sparse[0]
    report = domain_report(train.sparse[:, 0].numpy(), train, spec)
    assert report["feature_nmi"][col] == pytest.approx(1.0)
    # 40 ids against 40 codes over 2,400 rows: about 0.1 by chance, far below the copy's 1
    assert 0.0 < report["feature_nmi_chance"][col] < 0.2
    # codes drawn at random: every feature's NMI is at its chance level
    codes = np.random.default_rng(1).integers(0, 4, len(train))
    rep = domain_report(codes, train, spec)
    assert all(abs(rep["feature_nmi"][c] - rep["feature_nmi_chance"][c]) < 0.01 for c in spec.schema.features)


def test_feature_top_is_the_over_represented_value_with_enough_rows(small_prepared) -> None:
    spec, train = small_prepared.spec, small_prepared.train
    col = spec.schema.sparse[1]
    values = train.sparse[:, 1].numpy()
    # two codes: the rows of the most frequent id, and the rest
    top_id = int(np.bincount(values).argmax())
    codes = (values != top_id).astype(np.int64)
    report = domain_report(codes, train, spec, num_codes=2)
    top = report["codes"][0]["feature_top"][col]
    share = float((values == top_id).mean())
    assert top["value"] == spec.vocab[col][top_id - 1]
    assert top["share_in_code"] == pytest.approx(1.0)
    assert top["lift"] == pytest.approx(1.0 / share)
    # every listed value covers at least MIN_SHARE_IN_CODE of its code's rows and is over-represented there
    for code in report["codes"]:
        listed = code["top_values"] + list(code["feature_top"].values())
        assert all(e["share_in_code"] >= MIN_SHARE_IN_CODE and e["lift"] > 1.0 for e in listed)
    # the other code holds every id but top_id, each more often than overall, and never top_id itself
    assert all(e["value"] != top["value"] for e in report["codes"][1]["top_values"])
    # dense features are listed by their bin interval
    dense_top = report["codes"][0]["feature_top"].get(spec.schema.dense[0])
    assert dense_top is None or str(dense_top["value"]).startswith("[")


def test_markdown_lists_each_features_top_value_and_the_chance_level(small_prepared) -> None:
    spec, train = small_prepared.spec, small_prepared.train
    codes = train.handcrafted.numpy()
    md = report_markdown(domain_report(codes, train, spec), title="Report", level=3)
    assert md.startswith("### Report\n")
    assert "| code | " + " | ".join(spec.schema.features) + " |" in md
    assert "| feature | NMI | chance NMI | MI (nats) |" in md
    # a report saved before these keys existed still renders
    old = domain_report(codes, train, spec)
    for c in old["codes"]:
        del c["feature_top"]
    del old["feature_nmi_chance"]
    assert "| feature | NMI | chance NMI | MI (nats) |" in report_markdown(old)
