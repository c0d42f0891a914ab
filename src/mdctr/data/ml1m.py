"""MovieLens 1M in the official ``::``-separated format (reads the full release or the partial shared copy).

Multi-domain protocol of HAMUR and the Scenario-Wise Rec benchmark: domain = age group
{1, 18} → 0, {25} → 1, {35, 45, 50, 56} → 2; label = rating > 3; sparse user_id, movie_id, gender,
occupation, zip, first genre; dense age.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mdctr.data.base import (
    DataError,
    DatasetAdapter,
    LoadedDataset,
    register_dataset,
    require_file,
    to_binary_label,
)
from mdctr.schema import DenseRange, FeatureSchema

AGE_TO_DOMAIN = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}

SCHEMA = FeatureSchema(
    name="ml-1m",
    sparse=("user_id", "movie_id", "gender", "occupation", "zip", "genre"),
    dense=("age",),
    label="label",
    domain="domain",
    domain_names=("age<25", "age25-34", "age35+"),
    user="user_id",
    item="movie_id",
    time="timestamp",
    dense_ranges={"age": DenseRange(1, 56)},
    min_domain_rows=1,
)


def _read_colon_file(path: Path, names: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    """Read a ``::``-separated file with the fast C parser: split on ':' and keep every other field.

    Only valid for files whose fields contain no ':' (ratings.dat, users.dat).
    """
    n = len(names)
    try:
        df = pd.read_csv(
            path, sep=":", header=None, engine="c", dtype=str, keep_default_na=False, encoding="latin-1"
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"ml-1m: {path} is empty; expected {n} '::'-separated fields per line") from None
    except pd.errors.ParserError as e:
        raise DataError(
            f"ml-1m: {path} cannot be parsed as '::'-separated ({n} fields per line): {e}"
        ) from None
    if df.shape[1] != 2 * n - 1 or (df.shape[1] > 1 and (df.iloc[:, 1::2] != "").any().any()):
        found = (df.shape[1] + 1) // 2 if df.shape[1] > 1 else 1
        raise DataError(
            f"ml-1m: {path} must have {n} '::'-separated fields per line ({', '.join(names)}); "
            f"found {found} field(s) per line (wrong separator or column count?)"
        )
    df = df.iloc[:, ::2]
    df.columns = names
    out = {}
    for col in names:
        kind = dtypes.get(col, "str")
        if kind == "int":
            num = pd.to_numeric(df[col], errors="coerce")
            if num.isna().any():
                bad = df[col][num.isna()]
                line = int(bad.index[0]) + 1
                raise DataError(
                    f"ml-1m: {path} column {col!r} expects integers; line {line} has {bad.iloc[0]!r} "
                    f"({int(num.isna().sum())} bad row(s))"
                )
            out[col] = num.astype("int64")
        else:
            out[col] = df[col]
    return pd.DataFrame(out)


def _read_movies(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != 3:
                raise DataError(
                    f"ml-1m: {path} line {lineno} must have 3 '::'-separated fields (MovieID, Title, Genres); "
                    f"found {len(parts)}"
                )
            try:
                movie_id = int(parts[0])
            except ValueError:
                raise DataError(
                    f"ml-1m: {path} line {lineno}: MovieID {parts[0]!r} is not an integer"
                ) from None
            rows.append((movie_id, parts[2].split("|")[0]))
    if not rows:
        raise DataError(f"ml-1m: {path} has no rows")
    return pd.DataFrame(rows, columns=["movie_id", "genre"])


@register_dataset("ml-1m")
class MovieLens1M(DatasetAdapter):
    default_subdir = "ml-1m"

    def load(self, source: Path) -> LoadedDataset:
        ratings_path = require_file(source / "ratings.dat", self.name)
        users_path = require_file(source / "users.dat", self.name)
        movies_path = require_file(source / "movies.dat", self.name)

        ratings = _read_colon_file(
            ratings_path,
            ["user_id", "movie_id", "rating", "timestamp"],
            {"user_id": "int", "movie_id": "int", "timestamp": "int", "rating": "str"},
        )
        ratings["label"] = to_binary_label(
            ratings["rating"], 3, strict_greater=True, where=f"ml-1m: {ratings_path} column 'rating'"
        )
        users = _read_colon_file(
            users_path,
            ["user_id", "gender", "age", "occupation", "zip"],
            {"user_id": "int", "age": "int", "occupation": "int"},
        )
        movies = _read_movies(movies_path)

        unknown_age = ~users["age"].isin(list(AGE_TO_DOMAIN))
        if unknown_age.any():
            raise DataError(
                f"ml-1m: {users_path} column 'age' must be one of {sorted(AGE_TO_DOMAIN)}; found "
                f"{sorted(users.loc[unknown_age, 'age'].unique().tolist())[:5]} in {int(unknown_age.sum())} row(s)"
            )
        table = ratings.merge(users, on="user_id", how="left").merge(movies, on="movie_id", how="left")
        for what, col in (("users.dat", "gender"), ("movies.dat", "genre")):
            miss = table[col].isna()
            if miss.any():
                ref = "user_id" if what == "users.dat" else "movie_id"
                raise DataError(
                    f"ml-1m: {int(miss.sum())} rating(s) in {ratings_path} reference a {ref} missing from "
                    f"{what}, e.g. {int(table.loc[miss, ref].iloc[0])}"
                )
        table["domain"] = table["age"].map(AGE_TO_DOMAIN).astype("int64")
        table["age"] = table["age"].astype("float32")
        table["occupation"] = table["occupation"].astype("int64")
        table["timestamp"] = table["timestamp"].astype(np.int64)
        return LoadedDataset(table=table[list(SCHEMA.columns)], schema=SCHEMA, extras={})
