"""The data gate on broken copies of the ML-1M files: each fails with its exact message, naming file and line.

Every case writes a small copy of the three ``.dat`` files (30 ratings, 4 users, 3 movies), breaks one thing the
way real downloads and hand edits break, and runs the gate (:func:`validate_dataset`) over it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mdctr.data import DataError, load_dataset
from mdctr.validation import validate_dataset
from mdctr.validation.gate import DATA_DOCS_DIR, HTML_NAME, JSON_NAME

USERS = "1::F::1::10::48067\n2::M::25::16::70072\n3::M::35::15::55117\n4::F::56::7::02460\n"
MOVIES = "1::Toy Story (1995)::Animation|Children's\n2::Jumanji (1995)::Adventure\n3::Heat (1995)::Action\n"
RATINGS = [f"{1 + i % 4}::{1 + i % 3}::{1 + i % 5}::{978300000 + i}" for i in range(30)]
FIELDS = "4 '::'-separated fields per line (user_id, movie_id, rating, timestamp)"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"


def write_copy(root: Path, ratings: bytes | None = None, users: str = USERS) -> Path:
    d = root / "ml-1m"
    d.mkdir(parents=True)
    (d / "ratings.dat").write_bytes(ratings if ratings is not None else ("\n".join(RATINGS) + "\n").encode())
    (d / "users.dat").write_text(users)
    (d / "movies.dat").write_text(MOVIES)
    return d


def lines(*extra: str, replace: dict[int, str] | None = None) -> bytes:
    """The 30 good ratings with lines replaced (1-based) and ``extra`` lines appended."""
    rows = list(RATINGS)
    for lineno, text in (replace or {}).items():
        rows[lineno - 1] = text
    return ("\n".join([*rows, *extra]) + "\n").encode()


# (ratings.dat bytes, users.dat text, the failure line(s) of the gate; "{ratings}"/"{users}" = the file's path)
CASES: dict[str, tuple[bytes | None, str, list[str]]] = {
    "rating-9": (
        lines(replace={6: "2::3::9::978300005"}),
        USERS,
        [
            f"{IN_SET} [rating]: 1 row(s) (3.33%) unexpected at ratings.dat line 6; "
            "expected {'value_set': [1, 2, 3, 4, 5]}; e.g. [9]"
        ],
    ),
    "rating-minus-1": (
        lines("1::1::-1::978309999"),
        USERS,
        [
            f"{IN_SET} [rating]: 1 row(s) (3.23%) unexpected at ratings.dat line 31; "
            "expected {'value_set': [1, 2, 3, 4, 5]}; e.g. [-1]"
        ],
    ),
    "all-ratings-99": (
        ("\n".join("::".join([*r.split("::")[:2], "99", r.split("::")[3]]) for r in RATINGS) + "\n").encode(),
        USERS,
        [
            f"{IN_SET} [rating]: 30 row(s) (100%) unexpected at ratings.dat lines 1, 2, 3, 4, 5 (and 25 more); "
            "expected {'value_set': [1, 2, 3, 4, 5]}; e.g. [99, 99, 99, 99, 99]"
        ],
    ),
    "float-user-id": (
        lines("1.9::1::4::978309999"),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} column 'user_id' expects integers; found 1 bad line(s) at "
            "ratings.dat line 31, e.g. '1.9'"
        ],
    ),
    "float-timestamp": (
        lines(replace={2: "2::3::2::978300760.5", 9: "1::3::4::1e9"}),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} column 'timestamp' expects integers; found 2 bad line(s) at "
            "ratings.dat lines 2, 9, e.g. '978300760.5'"
        ],
    ),
    "binary-junk-appended": (
        lines() + b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x08\x06\x00\x00\x00\x5c\x72\xa8\x66",
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} line 31: expected " + FIELDS + "; found 1: '\\x89PNG' "
            "(3 malformed lines: ratings.dat lines 31, 32, 33)"
        ],
    ),
    "text-junk-with-quote": (
        lines('garbage "quoted', "1::1::5::978300001"),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} line 31: expected " + FIELDS + "; found 1: "
            "'garbage \"quoted'"
        ],
    ),
    "truncated-download": (
        lines("4::3:"),
        USERS,
        ["load_dataset [(files)]: ml-1m: {ratings} line 31: expected " + FIELDS + "; found 2: '4::3:'"],
    ),
    "extra-field": (
        lines(replace={4: "4::1::3::978300003::7"}),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} line 4: expected " + FIELDS + "; found 5: "
            "'4::1::3::978300003::7'"
        ],
    ),
    "nan-rating": (
        lines("1::2::NaN::978309999"),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} column 'rating' expects integers; found 1 bad line(s) at "
            "ratings.dat line 31, e.g. 'NaN'"
        ],
    ),
    "missing-movie-id": (
        lines(replace={7: "3::::2::978300006"}),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} has missing value(s) in column(s) ['movie_id'] at "
            "ratings.dat line 7 (1 line(s))"
        ],
    ),
    "missing-gender": (
        None,
        USERS.replace("3::M::", "3::::"),
        [
            "load_dataset [(files)]: ml-1m: {users} has missing value(s) in column(s) ['gender'] at "
            "users.dat line 3 (1 line(s))"
        ],
    ),
    "age-not-an-ml1m-code": (
        lines("5::1::4::978309999"),
        USERS + "5::M::30::3::10001\n",
        [
            f"{IN_SET} [age]: 1 row(s) (3.23%) unexpected at ratings.dat line 31; "
            "expected {'value_set': [1, 18, 25, 35, 45, 50, 56]}; e.g. [30.0]",
            f"{IN_SET} [domain]: 1 row(s) (3.23%) unexpected at ratings.dat line 31; "
            "expected {'value_set': [0, 1, 2]}; e.g. [-1]",
        ],
    ),
    "user-id-zero": (
        lines("0::1::4::978309999"),
        USERS + "0::M::25::3::10001\n",
        [
            f"{BETWEEN} [user_id]: 1 row(s) (3.23%) unexpected at ratings.dat line 31; "
            "expected {'min_value': 1}; e.g. [0]"
        ],
    ),
    "occupation-out-of-codes": (
        None,
        USERS.replace("2::M::25::16::", "2::M::25::42::"),
        [
            f"{BETWEEN} [occupation]: 8 row(s) (26.7%) unexpected at ratings.dat lines 2, 6, 10, 14, 18 "
            "(and 3 more); expected {'min_value': 0, 'max_value': 20}; e.g. [42, 42, 42, 42, 42]"
        ],
    ),
    "gender-unknown": (
        None,
        USERS.replace("4::F::", "4::X::"),
        [
            f"{IN_SET} [gender]: 7 row(s) (23.3%) unexpected at ratings.dat lines 4, 8, 12, 16, 20 (and 2 more); "
            "expected {'value_set': ['F', 'M']}; e.g. ['X', 'X', 'X', 'X', 'X']"
        ],
    ),
    "negative-timestamp": (
        lines(replace={30: "2::3::5::-5"}),
        USERS,
        [
            f"{BETWEEN} [timestamp]: 1 row(s) (3.33%) unexpected at ratings.dat line 30; "
            "expected {'min_value': 0}; e.g. [-5]"
        ],
    ),
    "unknown-user": (
        lines("9::1::4::978309999"),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: 1 rating(s) in {ratings} reference a user_id missing from users.dat, "
            "e.g. 9 at ratings.dat line 31"
        ],
    ),
    "wrong-separator": (
        ("\n".join(r.replace("::", "\t") for r in RATINGS) + "\n").encode(),
        USERS,
        [
            "load_dataset [(files)]: ml-1m: {ratings} must have " + FIELDS + "; found 1 field(s) per line "
            "(wrong separator or column count?)"
        ],
    ),
    "empty-ratings": (
        b"",
        USERS,
        ["load_dataset [(files)]: dataset 'ml-1m': file {ratings} is empty (0 bytes)"],
    ),
}


# users.dat and movies.dat broken the same ways: (users.dat text, movies.dat bytes, the failure line)
OTHER_FILES: dict[str, tuple[str, bytes, str]] = {
    "users-binary-junk": (
        USERS + "\x00\x01binary\x02",
        MOVIES.encode(),
        "load_dataset [(files)]: ml-1m: {users} line 5: expected 5 '::'-separated fields per line (user_id, "
        "gender, age, occupation, zip); found 1: '\\x00\\x01binary\\x02'",
    ),
    "users-duplicate-user": (
        USERS + "2::F::18::3::12345\n",
        MOVIES.encode(),
        "load_dataset [(files)]: ml-1m: {users} lists user_id 2 more than once, at users.dat lines 2, 5; "
        "expected one line per user",
    ),
    "users-float-age": (
        USERS.replace("::25::", "::25.5::"),
        MOVIES.encode(),
        "load_dataset [(files)]: ml-1m: {users} column 'age' expects integers; found 1 bad line(s) at "
        "users.dat line 2, e.g. '25.5'",
    ),
    "movies-binary-junk": (
        USERS,
        MOVIES.encode() + b"\x00\xff\xfe\x01\x02",
        "load_dataset [(files)]: ml-1m: {movies} line 4 must have 3 '::'-separated fields (MovieID, Title, "
        "Genres); found 1: '\\x00ÿþ\\x01\\x02'",
    ),
    "movies-float-id": (
        USERS,
        MOVIES.replace("2::Jumanji", "2.5::Jumanji").encode(),
        "load_dataset [(files)]: ml-1m: {movies} line 2: MovieID '2.5' is not an integer",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_FILES))
def test_broken_users_and_movies_fail_with_their_exact_message(case: str, tmp_path: Path) -> None:
    users, movies, expected = OTHER_FILES[case]
    d = write_copy(tmp_path / "src", None, users)
    (d / "movies.dat").write_bytes(movies)
    result = validate_dataset("ml-1m", d, tmp_path / "report")
    want = expected.replace("{users}", str(d / "users.dat")).replace("{movies}", str(d / "movies.dat"))
    assert list(result.failures) == [want]


@pytest.mark.parametrize("case", list(CASES))
def test_broken_copy_fails_with_its_exact_message(case: str, tmp_path: Path) -> None:
    ratings, users, expected = CASES[case]
    d = write_copy(tmp_path / "src", ratings, users)
    result = validate_dataset("ml-1m", d, tmp_path / "report")
    want = [
        e.replace("{ratings}", str(d / "ratings.dat")).replace("{users}", str(d / "users.dat"))
        for e in expected
    ]
    assert not result.success
    assert list(result.failures) == want
    report = json.loads(result.json_path.read_text())
    assert report["success"] is False and report["n_failed"] == len(want)


@pytest.mark.parametrize(
    "case", ["rating-9", "float-user-id", "binary-junk-appended", "age-not-an-ml1m-code"]
)
def test_loading_without_the_gate_refuses_the_same_copies(case: str, tmp_path: Path) -> None:
    """``load_dataset`` (train, prepare) checks the same schema rules: no path turns a rating of 9 into a label."""
    ratings, users, _ = CASES[case]
    d = write_copy(tmp_path / "src", ratings, users)
    with pytest.raises(DataError, match=r"ratings\.dat line"):
        load_dataset("ml-1m", d)


def test_crlf_and_blank_lines_are_fine(tmp_path: Path) -> None:
    text = "\r\n".join(RATINGS[:10]) + "\r\n\r\n" + "\r\n".join(RATINGS[10:]) + "\r\n"
    result = validate_dataset("ml-1m", write_copy(tmp_path / "src", text.encode()), tmp_path / "report")
    assert result.success, result.failures
    assert result.rows == 30


def test_an_interrupted_run_leaves_no_success_report_and_no_temp_files(tmp_path: Path) -> None:
    """A run killed mid-way must not leave the previous run's PASSED report, nor temp files; the next run
    cleans what a killed one left."""
    good = write_copy(tmp_path / "good")
    bad = write_copy(tmp_path / "bad", lines(replace={6: "2::3::9::978300005"}))
    report = tmp_path / "report"
    assert validate_dataset("ml-1m", good, report).success
    assert "PASSED" in (report / HTML_NAME).read_text()

    # a second run over the broken copy is killed while Great Expectations runs
    script = textwrap.dedent(
        f"""
        import os, signal
        import mdctr.validation.gate as gate
        from pathlib import Path

        def killed(*args, **kwargs):
            # what a SIGKILL in the middle of the suite leaves: a half-written temporary report
            Path({str(report)!r}, ".{JSON_NAME}.tmp-999999").write_text('{{"success": tr')
            os.kill(os.getpid(), signal.SIGKILL)

        gate._run_gx = killed
        gate.validate_dataset("ml-1m", {str(bad)!r}, Path({str(report)!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in report.iterdir())
    assert left == [f".{JSON_NAME}.tmp-999999"]  # the old PASSED report is gone; only the killed run's temp

    result = validate_dataset("ml-1m", bad, report)
    assert not result.success
    assert sorted(p.name for p in report.iterdir()) == sorted([DATA_DOCS_DIR, HTML_NAME, JSON_NAME])
    assert "FAILED" in (report / HTML_NAME).read_text()


def test_atomic_outputs_clean_temp_dirs_a_killed_run_left(tmp_path: Path) -> None:
    from mdctr.io import atomic_dir

    out = tmp_path / "prepared"
    orphan = tmp_path / ".prepared.tmp-abc123"
    orphan.mkdir()
    (orphan / "train.parquet").write_text("half")
    with atomic_dir(out) as tmp:
        (tmp / "done").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
