"""KuaiRand (Kuaishou; Gao et al., CIKM 2022) in the Scenario-Wise Rec preprocessed layout.

One CSV (``kuairand.csv``, or the format sample ``kuairand_sample.csv``): interactions joined with user and
video features, every categorical value already integer-coded by the benchmark's preprocessing.

Protocol (follows the benchmark): label = ``is_click``; domain = ``tab`` (the app page the video was shown
on). The benchmark keeps the five scenarios ``tab`` ∈ {0, 1, 2, 4, 6}; they are the known set here and map to
domains 0..4 in sorted order. A ``tab`` outside the known set is an error, unless ``drop_other_tabs=True``
(drops those rows, as the benchmark's own loader does on the full log). Option ``tabs`` replaces the set.

Columns:

* dropped: ``play_time_ms``, ``profile_stay_time``, ``comment_stay_time`` (outcomes of the impression: they
  leak the click) and ``duration_ms`` (dropped by the benchmark too, kept out for comparability);
* dense: the four raw counts ``follow_user_num``, ``fans_user_num``, ``friend_user_num``, ``register_days``,
  as log(1 + count) because they are heavy-tailed (the encoder then standardises them);
* sparse: everything else — user and video ids, activity level, the bucketed ``*_range`` versions of the
  counts, the 18 anonymous ``onehot_feat*`` user features, video type, visibility and resolution codes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdctr.config import ConfigError
from mdctr.data.base import DataError, DatasetAdapter, LoadedDataset, register_dataset
from mdctr.data.table import (
    binary_label,
    map_domain,
    numeric_column,
    plain,
    read_table_file,
    require_columns,
)
from mdctr.schema import FeatureSchema, ValueRule

log = logging.getLogger(__name__)

FILES = ("kuairand.csv", "kuairand_sample.csv")
LABEL = "is_click"
TAB = "tab"
DOMAIN = "domain"
#: the Scenario-Wise Rec benchmark's five KuaiRand scenarios
BENCHMARK_TABS = (0, 1, 2, 4, 6)
DROPPED = ("play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time")
COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
SPARSE = (
    "user_id", "video_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
    "is_video_author", "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range", *(f"onehot_feat{i}" for i in range(18)), "video_type", "visible_status",
    "server_width", "server_height",
)  # fmt: skip


def kuairand_schema(tabs: tuple[int, ...]) -> FeatureSchema:
    return FeatureSchema(
        name="kuairand",
        sparse=SPARSE,
        dense=COUNTS,
        label=LABEL,
        domain=DOMAIN,
        domain_names=tuple(f"tab {t}" for t in tabs),
        user="user_id",
        item="video_id",
        value_rules={"user_id": ValueRule(low=0), "video_id": ValueRule(low=0)},  # non-negative id codes
    )


@register_dataset("kuairand")
class KuaiRand(DatasetAdapter):
    """Options: ``tabs`` (known tab values, default the benchmark's five), ``drop_other_tabs`` (bool)."""

    default_subdir = "samples/kuairand"

    def __init__(
        self,
        tabs: tuple[int, ...] | list[int] = BENCHMARK_TABS,
        drop_other_tabs: bool = False,
        **options: Any,
    ) -> None:
        if options:
            raise ConfigError(
                f"dataset 'kuairand': unknown option(s) {sorted(options)}; valid: ['drop_other_tabs', 'tabs']"
            )
        self.tabs = tuple(sorted(int(t) for t in tabs))
        if not self.tabs or len(set(self.tabs)) != len(self.tabs):
            raise ConfigError(f"dataset 'kuairand': tabs must be distinct and non-empty; got {tabs}")
        self.drop_other_tabs = bool(drop_other_tabs)
        super().__init__(tabs=self.tabs, drop_other_tabs=self.drop_other_tabs)

    def load(self, source: Path) -> LoadedDataset:
        found = [source / f for f in FILES if (source / f).is_file()]
        if not found:
            raise DataError(f"dataset 'kuairand': {source} holds none of {list(FILES)}")
        path = found[0]  # the full file wins over the sample
        df = read_table_file(path, self.name)
        require_columns(df, path, self.name, [*SPARSE, *COUNTS, LABEL, TAB])

        tab = numeric_column(df, TAB, path, self.name, integer=True)
        if self.drop_other_tabs:
            keep = tab.isin(self.tabs)
            log.info("kuairand: keeping %d of %d rows with tab in %s", int(keep.sum()), len(df), self.tabs)
            df, tab = df[keep].reset_index(drop=True), tab[keep].reset_index(drop=True)
            if len(df) == 0:
                raise DataError(f"dataset 'kuairand': {path} has no row with tab in {list(self.tabs)}")

        out: dict[str, Any] = {c: numeric_column(df, c, path, self.name, integer=True) for c in SPARSE}
        for col in COUNTS:
            x = numeric_column(df, col, path, self.name)
            if (x < 0).any():
                raise DataError(
                    f"dataset 'kuairand': {path} column {col!r} is a count and must be >= 0; found "
                    f"{int((x < 0).sum())} negative row(s), e.g. {plain(x[x < 0].iloc[0])!r}"
                )
            out[col] = np.log1p(x).astype("float32")
        out[LABEL] = binary_label(df, LABEL, path, self.name)
        out[DOMAIN] = map_domain(tab, self.tabs, path, self.name, TAB)
        schema = kuairand_schema(self.tabs)
        table = pd.DataFrame({c: out[c] for c in schema.columns})
        return LoadedDataset(table=table, schema=schema, extras={})
