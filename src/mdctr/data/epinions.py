"""Epinions product ratings (Tang, Gao, Liu, WSDM 2012) as a many-domain CTR task.

Raw files: ``epinions.zip`` holding ``epinions/rating.mat`` (rows ``(user, product, category, rating)``;
the Tang et al. release documents a fifth column, helpfulness, which is ignored when present) and
``epinions/trustnetwork.mat`` (rows ``(truster, trustee)``), plus ``catalog_epinion.txt`` with the category
names. The MATLAB files are read from the zip in memory; nothing is extracted to disk.

Protocol: domain = product category (the catalog's ids, or the ids found when no catalog is readable, mapped
to 0..n-1 in sorted order); label = rating >= 4; sparse user_id, item_id, category; optional dense
``log_trust_in_degree`` = log(1 + number of users who trust the rating's author) (option ``trust_degree``).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.io

from mdctr.config import ConfigError
from mdctr.data.base import DataError, DatasetAdapter, LoadedDataset, register_dataset, require_file
from mdctr.schema import FeatureSchema, SourceLines, ValueRule

log = logging.getLogger(__name__)

ZIP_NAME = "epinions.zip"
CATALOG_NAME = "catalog_epinion.txt"
RATING_MEMBER = "epinions/rating.mat"
TRUST_MEMBER = "epinions/trustnetwork.mat"
#: ratings on the 1..5 scale at or above this are positives
POSITIVE_RATING = 4
RATING_RANGE = (1, 5)

USER, ITEM, CATEGORY, LABEL, DOMAIN = "user_id", "item_id", "category", "label", "domain"
TRUST = "log_trust_in_degree"


RATING = "rating"


def epinions_schema(domain_names: tuple[str, ...], trust_degree: bool) -> FeatureSchema:
    return FeatureSchema(
        name="epinions",
        sparse=(USER, ITEM, CATEGORY),
        dense=(TRUST,) if trust_degree else (),
        label=LABEL,
        domain=DOMAIN,
        domain_names=domain_names,
        user=USER,
        item=ITEM,
        raw_columns=(RATING,),
        # the release numbers users, products and categories from 1 and rates on whole stars 1..5
        value_rules={
            USER: ValueRule(low=1),
            ITEM: ValueRule(low=1),
            CATEGORY: ValueRule(low=1),
            RATING: ValueRule(allowed=tuple(range(RATING_RANGE[0], RATING_RANGE[1] + 1))),
            **({TRUST: ValueRule(low=0)} if trust_degree else {}),
        },
    )


def read_mat_member(zip_path: Path, member: str, min_cols: int) -> np.ndarray:
    """Read the single 2-D matrix of MATLAB file ``member`` inside ``zip_path``, in memory.

    Returns an integer array [rows, cols >= min_cols]; raises :class:`DataError` naming the file otherwise.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            try:
                raw = zf.read(member)
            except KeyError:
                raise DataError(
                    f"epinions: {zip_path} has no member {member!r}; found {zf.namelist()}"
                ) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        raise DataError(f"epinions: {zip_path} is not a readable zip file ({e})") from None
    try:
        mat = scipy.io.loadmat(io.BytesIO(raw))
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError) as e:
        raise DataError(f"epinions: {zip_path}:{member} is not a readable MATLAB file ({e})") from None
    arrays = {k: v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if len(arrays) != 1:
        raise DataError(
            f"epinions: {zip_path}:{member} must hold exactly one matrix; found {sorted(arrays) or 'none'}"
        )
    (name, arr), *_ = arrays.items()
    if arr.ndim != 2 or arr.shape[1] < min_cols or arr.shape[0] == 0:
        raise DataError(
            f"epinions: {zip_path}:{member} matrix {name!r} must be [rows >= 1, >= {min_cols} columns]; "
            f"found shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"epinions: {zip_path}:{member} matrix {name!r} must be numeric; found {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise DataError(
                f"epinions: {zip_path}:{member} matrix {name!r} must hold integers; found {len(rows)} row(s) "
                f"with non-integer values, e.g. row {int(rows[0]) + 1}: {arr[rows[0]].tolist()}"
            )
    return arr.astype(np.int64)


def read_catalog(path: Path) -> dict[int, str] | None:
    """``id name`` per line → {id: name}; None when the file is absent or not in that format."""
    if not path.is_file():
        return None
    out: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)\s+(.+?)\s*", line)
        if m is None:
            log.warning("epinions: %s is not 'id name' per line; using numeric category names", path)
            return None
        out[int(m.group(1))] = m.group(2)
    return out or None


@register_dataset("epinions")
class Epinions(DatasetAdapter):
    """Options: ``trust_degree`` (bool, default False) adds the dense trust in-degree feature."""

    default_subdir = "epinions"

    def __init__(self, trust_degree: bool = False, **options: Any) -> None:
        if options:
            raise ConfigError(
                f"dataset 'epinions': unknown option(s) {sorted(options)}; valid: ['trust_degree']"
            )
        super().__init__(trust_degree=trust_degree)
        self.trust_degree = bool(trust_degree)

    def load(self, source: Path) -> LoadedDataset:
        zip_path = require_file(source / ZIP_NAME, self.name)
        where = f"epinions: {zip_path}:{RATING_MEMBER}"
        ratings = read_mat_member(zip_path, RATING_MEMBER, min_cols=4)
        user, item, category, rating = (ratings[:, i] for i in range(4))

        # a rating outside 1..5 is not rejected here: the schema's value rule on the raw rating (data gate,
        # load_dataset's check) reports it with its rows

        catalog = read_catalog(source / CATALOG_NAME)
        known = np.array(sorted(catalog) if catalog else np.unique(category), dtype=np.int64)
        dom = np.searchsorted(known, category)
        outside = (dom >= len(known)) | (known[np.minimum(dom, len(known) - 1)] != category)
        if outside.any():
            raise DataError(
                f"{where} column 3 'category' must be one of the {len(known)} categories in "
                f"{source / CATALOG_NAME}; found {int(outside.sum())} row(s) outside, "
                f"e.g. {int(category[outside][0])}"
            )
        names = tuple(catalog[int(c)] if catalog else f"category {int(c)}" for c in known)

        cols: dict[str, Any] = {
            USER: user,
            ITEM: item,
            CATEGORY: category,
            LABEL: (rating >= POSITIVE_RATING).astype(np.int8),
            DOMAIN: dom.astype(np.int64),
        }
        if self.trust_degree:
            trust = read_mat_member(zip_path, TRUST_MEMBER, min_cols=2)
            if (trust[:, :2] < 0).any() or (user < 0).any():
                raise DataError(f"epinions: {zip_path}: user ids must be >= 0 to count trust in-degrees")
            # in-degree of the rating's author: how many users trust them (0 for users nobody trusts)
            size = int(max(trust[:, 1].max(), user.max())) + 1
            indeg = np.bincount(trust[:, 1], minlength=size)
            cols[TRUST] = np.log1p(indeg[user]).astype(np.float32)
        schema = epinions_schema(names, self.trust_degree)
        table = pd.DataFrame({c: cols[c] for c in schema.columns})
        rows = SourceLines(f"{ZIP_NAME}:{RATING_MEMBER}", np.arange(1, len(table) + 1), unit="row")
        return LoadedDataset(
            table=table, schema=schema, extras={}, raw=pd.DataFrame({RATING: rating}), row_labels=rows
        )
