"""MovieLens 1M in the official ``::``-separated format (reads the full release or the partial shared copy).

Multi-domain protocol of HAMUR and the Scenario-Wise Rec benchmark: domain = age group
{1, 18} → 0, {25} → 1, {35, 45, 50, 56} → 2; label = rating > 3; sparse user_id, movie_id, gender,
occupation, zip, first genre; dense age.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mdctr.data.base import (
    DataError,
    DatasetAdapter,
    LoadedDataset,
    register_dataset,
    require_file,
)
from mdctr.schema import FeatureSchema, SourceLines, ValueRule, describe_rows

AGE_TO_DOMAIN = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}
#: the release's README: ratings are whole stars 1..5, occupations are coded 0..20, gender is F or M
RATING_VALUES = (1, 2, 3, 4, 5)
OCCUPATIONS = (0, 20)
GENDERS = ("F", "M")
#: ids and timestamps must be integers in the raw files: "1.9" is an error, never truncated to 1
_INTEGER = r"\s*[+-]?\d+\s*"

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
    min_domain_rows=1,
    raw_columns=("rating",),
    value_rules={
        "user_id": ValueRule(low=1),
        "movie_id": ValueRule(low=1),
        "rating": ValueRule(allowed=RATING_VALUES),
        "age": ValueRule(allowed=tuple(AGE_TO_DOMAIN)),
        "occupation": ValueRule(low=OCCUPATIONS[0], high=OCCUPATIONS[1]),
        "gender": ValueRule(allowed=GENDERS),
        "timestamp": ValueRule(low=0),
    },
)


def _raw_lines(path: Path, wanted: np.ndarray) -> dict[int, str]:
    """The text of the given 1-based lines of ``path`` (one pass; used only on the error path)."""
    want, out = {int(i) for i in wanted}, {}
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, 1):
            if i in want:
                out[i] = raw.rstrip(b"\r\n").decode("latin-1")
    return out


def _shown(text: str, limit: int = 40) -> str:
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _read_colon_file(path: Path, names: list[str], dtypes: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a ``::``-separated file with the fast C parser: split on ':' and keep every other field.

    Only valid for files whose fields contain no ':' (ratings.dat, users.dat). Returns the table and each row's
    1-based line number in the file (blank lines are skipped). Every malformed line (too few or too many
    fields, binary junk, an empty field, a non-integer in an integer column) is a :class:`DataError` naming the
    file and the line.
    """
    n = len(names)
    fields = f"{n} '::'-separated fields per line ({', '.join(names)})"
    df, lines = _without_blank_lines(_split_on_colons(path, n, fields))
    if df.shape[1] != 2 * n - 1:  # the first line decided the width and it is wrong
        first = int(lines[0])
        text = _raw_lines(path, lines[:1]).get(first, "")
        raise DataError(
            f"ml-1m: {path} line {first}: expected {fields}; found {len(text.split('::'))}: {_shown(text)}"
        )
    df.iloc[:, -1] = df.iloc[:, -1].str.removesuffix("\r")
    seps = df.iloc[:, 1::2]
    data = df.iloc[:, ::2]
    data.columns = names
    _refuse_malformed_lines(path, data, seps, lines, fields)
    out = {}
    for col in names:
        out[col] = _integers(path, data[col], lines) if dtypes.get(col, "str") == "int" else data[col]
    return pd.DataFrame(out), lines


def _split_on_colons(path: Path, n: int, fields: str) -> pd.DataFrame:
    """Every line of ``path`` split on ':' as strings (fields and the empty separators between them, blank
    lines included); a file with no rows, or lines the parser cannot take, or too few fields on every line is
    a :class:`DataError` (``fields`` says what each line should hold)."""
    try:
        # QUOTE_NONE: a stray '"' in junk must not swallow the following lines into one field;
        # skip_blank_lines=False and only "\n" ending a line keep the row index equal to the line number (a '\r'
        # in junk would otherwise start a line of its own; a CRLF file's '\r' is stripped later).
        df = pd.read_csv(
            path,
            sep=":",
            header=None,
            engine="c",
            dtype=str,
            keep_default_na=False,
            encoding="latin-1",
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
            lineterminator="\n",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"ml-1m: {path} is empty; expected {fields}") from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m is None:
            raise DataError(f"ml-1m: {path} cannot be parsed as {fields}: {e}") from None
        line, saw = int(m.group(2)), int(m.group(3))
        text = _raw_lines(path, np.array([line])).get(line, "")
        raise DataError(
            f"ml-1m: {path} line {line}: expected {fields}; found {(saw + 1) // 2}: {_shown(text)}"
        ) from None
    if df.shape[1] < 2 * n - 1 and (df.shape[1] == 1 or (df.iloc[:, ::2] != "").all(axis=None)):
        found = (df.shape[1] + 1) // 2
        raise DataError(
            f"ml-1m: {path} must have {fields}; found {found} field(s) per line (wrong separator or column count?)"
        )
    return df


def _without_blank_lines(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(``df`` without its blank lines, the 1-based line number of each row kept)."""
    # cheap pre-filter: a blank line has an empty first field ("\r" in a CRLF file) and nothing else
    blank = df.iloc[:, 0].isin(["", "\r"]).to_numpy().copy()
    if blank.any():
        blank[blank] = (df.loc[blank].iloc[:, 1:] == "").all(axis=1).to_numpy()
    lines = np.flatnonzero(~blank) + 1
    return df.loc[~blank].reset_index(drop=True), lines


def _refuse_malformed_lines(
    path: Path, data: pd.DataFrame, seps: pd.DataFrame, lines: np.ndarray, fields: str
) -> None:
    """A :class:`DataError` for the first line with the wrong number of fields (and how many more there are),
    else for the lines missing a value; nothing when every line has its fields."""
    # Junk, a truncated download or a stray ':' leaves a non-empty separator column or empty fields; whether a
    # line has the wrong number of fields or a missing value is decided on its raw text.
    suspect = (seps != "").any(axis=1).to_numpy() | (data == "").any(axis=1).to_numpy()
    if not suspect.any():
        return
    n = data.shape[1]
    texts = _raw_lines(path, lines[suspect])
    counts = {i: len(t.split("::")) for i, t in texts.items()}
    malformed = np.zeros(len(lines), dtype=bool)
    malformed[suspect] = [
        counts[int(i)] != n or ":" in texts[int(i)].replace("::", "") for i in lines[suspect]
    ]
    where = SourceLines(path.name, lines)
    if malformed.any():
        line = int(lines[np.flatnonzero(malformed)[0]])
        raise DataError(
            f"ml-1m: {path} line {line}: expected {fields}; found {counts[line]}: {_shown(texts[line])}"
            + (
                f" ({int(malformed.sum())} malformed lines: {describe_rows(malformed, where)})"
                if malformed.sum() > 1
                else ""
            )
        )
    empty = data == ""
    cols = [c for c in data.columns if empty[c].any()]
    raise DataError(
        f"ml-1m: {path} has missing value(s) in column(s) {cols} at {describe_rows(suspect, where)} "
        f"({int(suspect.sum())} line(s))"
    )


def _integers(path: Path, values: pd.Series, lines: np.ndarray) -> pd.Series:
    """``values`` (strings) as int64; a :class:`DataError` naming the lines of any that are not integers."""
    num = pd.to_numeric(values, errors="coerce")
    if not pd.api.types.is_integer_dtype(num.dtype):
        bad = (~values.str.fullmatch(_INTEGER)).to_numpy()
        if bad.any():
            raise DataError(
                f"ml-1m: {path} column {values.name!r} expects integers; found {int(bad.sum())} bad line(s) at "
                f"{describe_rows(bad, SourceLines(path.name, lines))}, e.g. {values.to_numpy()[bad][0]!r}"
            )
        num = pd.to_numeric(values)
    return num.astype("int64")


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
                    f"found {len(parts)}: {_shown(line)}"
                )
            if re.fullmatch(_INTEGER, parts[0]) is None:
                raise DataError(f"ml-1m: {path} line {lineno}: MovieID {parts[0]!r} is not an integer")
            movie_id = int(parts[0])
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

        ratings, lines = _read_colon_file(
            ratings_path,
            ["user_id", "movie_id", "rating", "timestamp"],
            {"user_id": "int", "movie_id": "int", "timestamp": "int", "rating": "int"},
        )
        rows = SourceLines(ratings_path.name, lines)
        ratings["label"] = (ratings["rating"] > 3).astype("int8")
        users, user_lines = _read_colon_file(
            users_path,
            ["user_id", "gender", "age", "occupation", "zip"],
            {"user_id": "int", "age": "int", "occupation": "int"},
        )
        dup = users["user_id"].duplicated(keep=False).to_numpy()
        if dup.any():
            raise DataError(
                f"ml-1m: {users_path} lists user_id {int(users['user_id'].to_numpy()[dup][0])} more than once, at "
                f"{describe_rows(dup, SourceLines(users_path.name, user_lines))}; expected one line per user"
            )
        movies = _read_movies(movies_path)

        # left merges keep the ratings' order, so table row i is ratings.dat line lines[i]
        table = ratings.merge(users, on="user_id", how="left").merge(movies, on="movie_id", how="left")
        for what, col in (("users.dat", "gender"), ("movies.dat", "genre")):
            miss = table[col].isna().to_numpy()
            if miss.any():
                ref = "user_id" if what == "users.dat" else "movie_id"
                raise DataError(
                    f"ml-1m: {int(miss.sum())} rating(s) in {ratings_path} reference a {ref} missing from "
                    f"{what}, e.g. {int(table[ref].to_numpy()[miss][0])} at {describe_rows(miss, rows)}"
                )
        # an age outside the release's codes gets domain -1: the schema's value rules (the data gate, or the
        # check in load_dataset) report it with its rows instead of this adapter stopping at the first
        table["domain"] = table["age"].map(AGE_TO_DOMAIN).fillna(-1).astype("int64")
        table["age"] = table["age"].astype("float32")
        table["occupation"] = table["occupation"].astype("int64")
        table["timestamp"] = table["timestamp"].astype(np.int64)
        return LoadedDataset(
            table=table[list(SCHEMA.columns)],
            schema=SCHEMA,
            extras={},
            raw=ratings[list(SCHEMA.raw_columns)],
            row_labels=rows,
        )
