"""The one planning rule for (model, domain source) pairs, shared by the pipeline and the benchmark."""

from __future__ import annotations

import pytest

from mdctr.models.base import plan_pairs


def test_single_source_models_keep_their_source_and_multi_domain_models_take_the_requested() -> None:
    pairs, skipped = plan_pairs(["dnn", "star", "adaptive2", "star"], ["handcrafted", "mined"])
    assert pairs == [("dnn", "none"), ("star", "handcrafted"), ("star", "mined"), ("adaptive2", "mined")]
    assert skipped == [("dnn", "handcrafted"), ("dnn", "mined"), ("adaptive2", "handcrafted")]


def test_unknown_sources_and_models_are_named() -> None:
    with pytest.raises(ValueError, match="learned"):
        plan_pairs(["star"], ["learned"])
    with pytest.raises(KeyError, match="nosuch"):
        plan_pairs(["nosuch"], ["none"])
