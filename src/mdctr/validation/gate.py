"""Validate a canonical table with a Great Expectations suite derived from its :class:`FeatureSchema`.

The suite is never written by hand: :func:`suite_specs` lists the expectations a schema implies and
:func:`build_suite` turns them into a GX ``ExpectationSuite``. Two table-level rules have no built-in GX
expectation for pandas (share of duplicated rows, rows per domain), so :func:`validate_table` adds two derived
columns to the batch and the suite checks them with ordinary column expectations; every check therefore runs
in one GX validation and appears in one report.

Raw value rules (:attr:`FeatureSchema.value_rules`: rating scales, age codes, id ranges) become range and set
expectations; rules on :attr:`FeatureSchema.raw_columns` are checked on the raw values the adapter hands over
(``LoadedDataset.raw``), so a rating of 9 fails here even though the canonical table only holds its 0/1 label.
Failed expectations name the offending rows by their place in the raw files (``LoadedDataset.row_labels``).

The validation runs as a GX checkpoint whose ``UpdateDataDocsAction`` builds GX Data Docs (an HTML site:
``index.html``, the suite's page and this validation's page) into ``<report_dir>/data_docs/``, next to the
compact self-contained summary ``validation_report.html`` and its JSON. Data Docs are built whether the data
passes or not: on failure they are the page that says which expectation failed, on which rows.

Reports are replaced atomically and the previous run's reports (Data Docs included) are removed before
validation starts, so a run killed half-way never leaves a report claiming success.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdctr.config import ConfigError
from mdctr.schema import FeatureSchema, SchemaError, ValueRule, describe_rows

log = logging.getLogger(__name__)

#: derived column: True where the row repeats an earlier row exactly (over the schema columns)
DUPLICATE_COL = "_mdctr_duplicate_row"
#: derived column: number of rows in this row's hand-crafted domain
DOMAIN_ROWS_COL = "_mdctr_domain_rows"

INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_TYPES = ["float16", "float32", "float64"]
# pandas 3 stores strings as the "str" extension dtype, which GX 1.24's type check does not recognise;
# validate_table hands GX such columns as object dtype, whose values GX then checks one by one ("str").
STRING_TYPES = ["object", "str"]

HTML_NAME = "validation_report.html"
JSON_NAME = "validation_report.json"
#: the GX Data Docs site inside the report directory (``data_docs/index.html``)
DATA_DOCS_DIR = "data_docs"
#: name of the Data Docs site in the GX context (GX's own default site, in a temporary directory, is dropped)
DATA_DOCS_SITE = "mdctr"


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation implied by the schema: GX type (snake case), its arguments, and why it exists."""

    type: str
    kwargs: dict[str, Any]
    why: str


@dataclass(frozen=True)
class ExpectationOutcome:
    """Result of one expectation (or of loading the data, ``type="load_dataset"``)."""

    type: str
    column: str
    success: bool
    why: str
    message: str
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one table.

    Attributes:
        success: every expectation passed.
        results: one outcome per expectation, in suite order.
        n_failed: number of failed expectations.
        html_path: self-contained HTML report (inline CSS, one file).
        json_path: the same as JSON.
        dataset: schema/dataset name.
        rows: rows validated (0 when the data could not be loaded).
        seconds: wall time of the validation (GX import included on first use).
        failures: one line per failed expectation: type, column, what was found vs expected, rows.
        data_docs_index: the GX Data Docs site's ``index.html`` (None when the data could not be loaded,
            so no GX validation ran).
        data_docs_page: this validation's page in that site (one HTML file; its styles and scripts come from
            public CDNs, so it also reads as a single page, e.g. in the KFP UI).
    """

    success: bool
    results: tuple[ExpectationOutcome, ...]
    n_failed: int
    html_path: Path
    json_path: Path
    dataset: str
    rows: int
    seconds: float
    failures: tuple[str, ...] = field(default=())
    data_docs_index: Path | None = None
    data_docs_page: Path | None = None


# -- the suite --------------------------------------------------------------------------------------------
def suite_specs(schema: FeatureSchema) -> list[ExpectationSpec]:
    """The expectations ``schema`` implies, in report order."""
    return [
        ExpectationSpec("expect_table_row_count_to_be_between", {"min_value": 1}, "the table has rows"),
        *(
            ExpectationSpec("expect_column_to_exist", {"column": c}, "schema column present")
            for c in schema.columns
        ),
        *_column_type_specs(schema),
        *_value_specs(schema),
        *_table_specs(schema),
    ]


def _column_type_specs(schema: FeatureSchema) -> list[ExpectationSpec]:
    """No missing values (dense ones allowed where :attr:`FeatureSchema.dense_nullable`), each role's types."""
    specs = [
        ExpectationSpec("expect_column_values_to_not_be_null", {"column": col}, "no missing values")
        for col in schema.columns
        # a bring-your-own table may leave dense values empty; the encoder fills them
        if not (schema.dense_nullable and col in schema.dense)
    ]
    role_types = (
        [(c, INT_TYPES + STRING_TYPES, "sparse: integer or string categories") for c in schema.sparse]
        + [(c, FLOAT_TYPES, "dense: floats") for c in schema.dense]
        + [(schema.label, INT_TYPES, "label: integer 0/1"), (schema.domain, INT_TYPES, "domain: integer id")]
        + ([(schema.time, INT_TYPES, "time: integer timestamp")] if schema.time else [])
    )
    for col, types, why in role_types:
        specs.append(
            ExpectationSpec(
                "expect_column_values_to_be_in_type_list", {"column": col, "type_list": types}, why
            )
        )
    return specs


def _value_specs(schema: FeatureSchema) -> list[ExpectationSpec]:
    """Label 0/1, known domain ids, the schema's value rules and dense ranges."""
    specs = [
        ExpectationSpec(
            "expect_column_values_to_be_in_set", {"column": schema.label, "value_set": [0, 1]}, "label is 0/1"
        ),
        ExpectationSpec(
            "expect_column_values_to_be_in_set",
            {"column": schema.domain, "value_set": list(range(schema.num_domains))},
            f"domain is a known id 0..{schema.num_domains - 1} ({', '.join(schema.domain_names)})",
        ),
    ]
    # id ranges come from each adapter's value rules: a bring-your-own table may use string ids
    for col, rule in schema.value_rules.items():
        raw = " (raw file value)" if col in schema.raw_columns else ""
        # the label's raw values (a rating before its threshold) sit beside the 0/1 label under another name
        col = schema.raw_name(col)
        if rule.allowed is not None:
            specs.append(
                ExpectationSpec(
                    "expect_column_values_to_be_in_set",
                    {"column": col, "value_set": list(rule.allowed)},
                    f"value is one of {list(rule.allowed)}{raw}",
                )
            )
        if rule.low is not None or rule.high is not None:
            bounds = {k: v for k, v in (("min_value", rule.low), ("max_value", rule.high)) if v is not None}
            specs.append(
                ExpectationSpec(
                    "expect_column_values_to_be_between",
                    {"column": col, **bounds},
                    f"value {ValueRule(low=rule.low, high=rule.high).describe()}{raw}",
                )
            )
    for col, rng in schema.dense_ranges.items():
        specs.append(
            ExpectationSpec(
                "expect_column_values_to_be_between",
                {"column": col, "min_value": rng.low, "max_value": rng.high},
                f"dense value within [{rng.low}, {rng.high}]",
            )
        )
    return specs


def _table_specs(schema: FeatureSchema) -> list[ExpectationSpec]:
    """The two table-level rules, on the derived columns :func:`validate_table` adds: duplicated rows, rows
    per domain."""
    specs = [
        ExpectationSpec(
            "expect_column_values_to_be_in_set",
            {"column": DUPLICATE_COL, "value_set": [False], "mostly": 1.0 - schema.max_duplicate_rate},
            f"at most {schema.max_duplicate_rate:.2%} of rows repeat an earlier row exactly (max_duplicate_rate)",
        )
    ]
    if schema.min_domain_rows > 0:
        specs.append(
            ExpectationSpec(
                "expect_column_distinct_values_to_contain_set",
                {"column": schema.domain, "value_set": list(range(schema.num_domains))},
                "every domain has rows",
            )
        )
        specs.append(
            ExpectationSpec(
                "expect_column_values_to_be_between",
                {"column": DOMAIN_ROWS_COL, "min_value": schema.min_domain_rows},
                f"every domain has at least {schema.min_domain_rows} rows",
            )
        )
    return specs


def _gx_class(snake: str) -> Any:
    import great_expectations.expectations as gxe

    return getattr(gxe, "".join(part.title() for part in snake.split("_")))


def build_suite(schema: FeatureSchema, specs: list[ExpectationSpec] | None = None) -> Any:
    """A GX ``ExpectationSuite`` named ``mdctr-<dataset>`` holding :func:`suite_specs` (or ``specs``, a subset
    of them) (imports GX)."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=f"mdctr-{schema.name}")
    for spec in suite_specs(schema) if specs is None else specs:
        suite.add_expectation(_gx_class(spec.type)(**spec.kwargs, meta={"why": spec.why}))
    return suite


# -- running it -------------------------------------------------------------------------------------------
def _batch_frame(table: pd.DataFrame, schema: FeatureSchema, raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """The frame GX sees: schema columns present (string dtype as object), the raw-only columns from ``raw``
    (aligned by position) and the two derived columns."""
    present = [c for c in schema.columns if c in table.columns]
    if raw is not None and len(raw) != len(table):
        raise SchemaError(
            f"{schema.name}: the adapter's raw columns have {len(raw)} rows but the table has {len(table)}"
        )
    cols: dict[str, Any] = {}
    extra = [] if raw is None else [raw[c].to_numpy() for c in schema.raw_columns if c in raw.columns]
    for c in table.columns:
        s = table[c]
        cols[c] = s.astype(object) if isinstance(s.dtype, pd.StringDtype) else s
    frame = pd.DataFrame(cols, index=table.index)
    for c, values in zip(
        [c for c in schema.raw_columns if raw is not None and c in raw.columns], extra, strict=True
    ):
        frame[schema.raw_name(c)] = values
    frame[DUPLICATE_COL] = table.duplicated(subset=present) if present else False
    if schema.domain in table.columns:
        frame[DOMAIN_ROWS_COL] = table.groupby(schema.domain, dropna=False)[schema.domain].transform("size")
    return frame.reset_index(drop=True)


def _raised_message(res: Any) -> str:
    info = res.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "")
    return ""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _row_names(res_result: dict[str, Any], count: int | None, n_rows: int, row_labels: Any) -> str:
    """The rows GX reported as unexpected (``partial_unexpected_index_list``), named by ``row_labels``."""
    idx = [i for i in (res_result.get("partial_unexpected_index_list") or []) if isinstance(i, int)]
    idx = [i for i in idx if 0 <= i < n_rows]
    if not idx:
        return ""
    mask = np.zeros(n_rows, dtype=bool)
    mask[idx] = True
    return describe_rows(mask, row_labels, total=max(count or 0, len(idx)))


def _outcome(res: Any, why: str, n_rows: int = 0, row_labels: Any = None) -> ExpectationOutcome:
    cfg = res.expectation_config
    kwargs = dict(cfg.kwargs)
    column = str(kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or "(table)")
    r = res.result or {}
    observed = r.get("observed_value")
    count = r.get("unexpected_count")
    pct = r.get("unexpected_percent")
    examples = tuple(_jsonable(r.get("partial_unexpected_list") or [])[:5])
    raised = _raised_message(res)
    # GX stores numeric bounds as floats: show a bound of 1 as 1, as the schema wrote it
    expected = {
        k: int(v) if isinstance(v, float) and v.is_integer() and k in ("min_value", "max_value") else v
        for k, v in kwargs.items()
        if k not in ("column", "batch_id", "result_format")
    }
    rows = _row_names(r, count, n_rows, row_labels) if count else ""
    at = f" at {rows}" if rows else ""
    if res.success:
        message = "ok"
    elif raised:
        message = f"could not be checked: {raised}"
    elif count is not None and cfg.type == "expect_column_values_to_not_be_null":
        message = f"{count} row(s) ({pct:.3g}%) with a missing value{at}; expected none"
        examples = ()
    elif count is not None and column == DUPLICATE_COL:
        # the derived column's values (True) say nothing: give the share and the limit in the schema's words
        limit = 1.0 - float(kwargs.get("mostly", 1.0))
        message = (
            f"{count} of {n_rows} rows ({pct:.3g}%) repeat an earlier row exactly{at}; at most {limit:.2%} may "
            f"(max_duplicate_rate)"
        )
        examples = ()
    elif count is not None:
        message = f"{count} row(s) ({pct:.3g}%) unexpected{at}; expected {expected}; e.g. {list(examples)}"
    else:
        message = f"observed {observed!r}; expected {expected}"
    return ExpectationOutcome(
        type=cfg.type,
        column=column,
        success=bool(res.success),
        why=why,
        message=message,
        observed=_jsonable(observed),
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if pct is None else float(pct),
        examples=examples,
    )


@dataclass(frozen=True)
class _GxRun:
    outcomes: list[ExpectationOutcome]
    docs_index: Path | None
    docs_page: Path | None


def _data_docs_site(docs_dir: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _url_path(url: str | None) -> Path | None:
    if not url or not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(url).path))
    return path if path.is_file() else None


def _prune_static(docs_dir: Path) -> None:
    """Drop the GX static images no page of the site references (how-to animations, ~3 MB), so the site
    logged to MLflow for every run stays small."""
    static = docs_dir / "static" / "images"
    if not static.is_dir():
        return
    pages = "".join(p.read_text(encoding="utf-8", errors="replace") for p in docs_dir.rglob("*.html"))
    pages += "".join(p.read_text(encoding="utf-8", errors="replace") for p in docs_dir.rglob("*.css"))
    for image in static.iterdir():
        if image.is_file() and image.name not in pages:
            image.unlink()


def _run_gx(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    row_labels: Any = None,
    docs_dir: Path | None = None,
    specs: list[ExpectationSpec] | None = None,
) -> _GxRun:
    """Run the suite as a GX checkpoint; with ``docs_dir`` its ``UpdateDataDocsAction`` builds Data Docs there."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs its set-up at INFO, one line per internal registration: noise in step logs.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars would flood non-TTY logs (KFP, CI).
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # the ephemeral context's default site lives in a temporary directory nobody would find: only ours
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(DATA_DOCS_SITE, _data_docs_site(docs_dir))
        actions.append(UpdateDataDocsAction(name="data-docs", site_names=[DATA_DOCS_SITE]))
    batch_def = (
        context.data_sources.add_pandas("mdctr")
        .add_dataframe_asset(schema.name)
        .add_batch_definition_whole_dataframe("table")
    )
    suite = context.suites.add(build_suite(schema, specs))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch_def, suite=suite, name=f"validate-{schema.name}")
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"gate-{schema.name}",
            validation_definitions=[definition],
            actions=actions,
            result_format="SUMMARY",
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (result_id, run), *_ = result.run_results.items()
    docs_index = docs_page = None
    if docs_dir is not None:
        _prune_static(docs_dir)
        docs_index = docs_dir / "index.html"
        urls = context.get_docs_sites_urls(resource_identifier=result_id, site_name=DATA_DOCS_SITE)
        docs_page = _url_path(urls[0]["site_url"] if urls else None)
    whys = [s.why for s in (suite_specs(schema) if specs is None else specs)]
    # GX returns results in suite order; fall back to the expectation's meta if that ever changes.
    outcomes = [
        _outcome(
            res,
            (res.expectation_config.meta or {}).get("why") or (whys[i] if i < len(whys) else ""),
            len(frame),
            row_labels,
        )
        for i, res in enumerate(run.results)
    ]
    return _GxRun(outcomes, docs_index if docs_index and docs_index.is_file() else None, docs_page)


def validate_table(
    table: pd.DataFrame,
    schema: FeatureSchema,
    report_dir: Path,
    *,
    source: str = "",
    raw: pd.DataFrame | None = None,
    row_labels: Any = None,
) -> ValidationResult:
    """Run the schema's suite over ``table``; write ``validation_report.{html,json}`` into ``report_dir``.

    ``raw`` holds the schema's raw-only columns row by row (without it their expectations fail as unchecked);
    ``row_labels`` names rows in messages (default: row numbers from 1). GX Data Docs go to
    ``report_dir/data_docs/``. Failures do not raise: the result says which expectations failed (callers decide
    to stop the run).
    """
    start = time.perf_counter()
    clear_reports(report_dir)
    run = _run_gx(_batch_frame(table, schema, raw), schema, row_labels, Path(report_dir) / DATA_DOCS_DIR)
    return _finish(
        run.outcomes,
        schema.name,
        len(table),
        report_dir,
        start,
        source,
        docs=(run.docs_index, run.docs_page),
    )


def validate_specs(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    specs: list[ExpectationSpec],
    report_dir: Path,
    *,
    source: str = "",
) -> ValidationResult:
    """Run ``specs`` (a subset of :func:`suite_specs`, e.g. the expectations on the feature columns a served
    request log holds) over ``frame`` as one checkpoint; reports as :func:`validate_table`."""
    start = time.perf_counter()
    clear_reports(report_dir)
    run = _run_gx(frame.reset_index(drop=True), schema, None, Path(report_dir) / DATA_DOCS_DIR, specs)
    return _finish(
        run.outcomes, schema.name, len(frame), report_dir, start, source, docs=(run.docs_index, run.docs_page)
    )


def clear_reports(report_dir: Path | str) -> None:
    """Remove the previous run's reports (Data Docs included) and any temporary file a killed run left behind.

    Called before validating, so that an interrupted run leaves no report at all rather than an old one that
    claims success.
    """
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return
    shutil.rmtree(report_dir / DATA_DOCS_DIR, ignore_errors=True)
    for name in (HTML_NAME, JSON_NAME):
        (report_dir / name).unlink(missing_ok=True)
        for stale in report_dir.glob(f".{name}.tmp-*"):
            log.info("removing %s left by an interrupted run", stale)
            stale.unlink(missing_ok=True)


def validate_dataset(name: str, source: Path | str, report_dir: Path, **options: Any) -> ValidationResult:
    """Load dataset ``name`` from ``source`` with its adapter and validate it.

    A file the adapter cannot read (missing, empty, truncated, wrong separator, corrupt zip, binary, float ids,
    …) or a bad ``schema.yaml`` (:class:`ConfigError`) is reported as a failed ``load_dataset`` outcome carrying
    the adapter's one-line message, with the same report files. Loading without the gate
    (:func:`mdctr.data.load_dataset`) refuses the same tables: both derive their rules from the schema.
    """
    from mdctr.data import load_dataset

    start = time.perf_counter()
    clear_reports(report_dir)
    try:
        # unchecked: the suite reports every violation with its rows instead of the first one found
        loaded = load_dataset(name, source, check=False, **options)
    except (SchemaError, ConfigError) as e:
        # a bad schema.yaml is reported like unreadable files: one line, and a report that says so
        outcome = ExpectationOutcome(
            type="load_dataset",
            column="(files)",
            success=False,
            why="the raw files and their schema can be read",
            message=str(e),
        )
        # the message itself is in the result (printed once by the CLI, raised by the pipeline step)
        log.debug("validation of %s failed at load: %s", name, e)
        return _finish([outcome], name, 0, report_dir, start, str(source))
    return validate_table(
        loaded.table,
        loaded.schema,
        report_dir,
        source=str(source),
        raw=loaded.raw,
        row_labels=loaded.row_labels,
    )


def _finish(
    outcomes: list[ExpectationOutcome],
    dataset: str,
    rows: int,
    report_dir: Path,
    start: float,
    source: str,
    docs: tuple[Path | None, Path | None] = (None, None),
) -> ValidationResult:
    report_dir = Path(report_dir)
    failed = [o for o in outcomes if not o.success]
    seconds = time.perf_counter() - start
    html_path, json_path = report_dir / HTML_NAME, report_dir / JSON_NAME
    summary = {
        "dataset": dataset,
        "source": source,
        "rows": rows,
        "success": not failed,
        "n_expectations": len(outcomes),
        "n_failed": len(failed),
        "seconds": round(seconds, 3),
        "results": [asdict(o) for o in outcomes],
        "data_docs": str(docs[0]) if docs[0] else None,
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(json_path, json.dumps(summary, indent=2, default=str))
    _write_atomic(html_path, render_html(summary))
    level = logging.INFO if not failed else logging.ERROR
    log.log(
        level, "validated %s: %d rows, %d/%d expectations failed", dataset, rows, len(failed), len(outcomes)
    )
    return ValidationResult(
        success=not failed,
        results=tuple(outcomes),
        n_failed=len(failed),
        html_path=html_path,
        json_path=json_path,
        dataset=dataset,
        rows=rows,
        seconds=seconds,
        failures=tuple(f"{o.type} [{o.column}]: {o.message}" for o in failed),
        data_docs_index=docs[0],
        data_docs_page=docs[1],
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} .ok{color:#176f2c} .bad{color:#b3261e}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr.fail td{background:#fdecea} code{font-size:.95em}
"""


def render_html(summary: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, no scripts or external assets) for the KFP UI."""
    esc = html.escape
    status = "PASSED" if summary["success"] else "FAILED"
    cls = "ok" if summary["success"] else "bad"
    rows = []
    for r in summary["results"]:
        mark = "✔" if r["success"] else "✘"
        rows.append(
            f"<tr class='{'pass' if r['success'] else 'fail'}'><td>{mark}</td><td><code>{esc(r['type'])}</code></td>"
            f"<td>{esc(r['column'])}</td><td>{esc(r['why'])}</td><td>{esc(str(r['message']))}</td></tr>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Validation {esc(summary['dataset'])}: {status}</title><style>{_CSS}</style></head><body>"
        f"<h1>Data validation: {esc(summary['dataset'])} — <span class='{cls}'>{status}</span></h1>"
        f"<p>{summary['rows']} rows from <code>{esc(str(summary['source']))}</code>; "
        f"{summary['n_failed']} of {summary['n_expectations']} expectations failed; {summary['seconds']} s.</p>"
        + (
            f"<p>Great Expectations Data Docs: <a href='{DATA_DOCS_DIR}/index.html'>{DATA_DOCS_DIR}/index.html</a>"
            " (beside this page).</p>"
            if summary.get("data_docs")
            else ""
        )
        + "<table><tr><th></th><th>expectation</th><th>column</th><th>rule</th><th>result</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
