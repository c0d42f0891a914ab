"""Component: Great Expectations gate on the raw data; fails the run on a violation after writing the report."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    report="Great Expectations validation report (HTML).",
    results="Great Expectations validation results (JSON).",
)
def validate_data(
    dataset: str,
    dataset_options: str,
    tracking_uri: str,
    parent_run_id: str,
    raw: Input[Dataset],
    report: Output[HTML],
    results: Output[Dataset],
) -> int:
    """Validate ``raw``; write the HTML data docs to ``report`` and the JSON results to ``results``; return rows."""
    from mdctr.steps.validate_data import ValidateConfig
    from mdctr.steps.validate_data import validate_data as step

    result = step(
        source=raw.path,
        html_path=report.path,
        results_dir=results.path,
        config=ValidateConfig(
            dataset=dataset,
            dataset_options=dataset_options,
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
        ),
    )
    for artifact in (report, results):
        artifact.metadata.update(
            {"dataset": dataset, "rows": result.rows, "expectations": result.expectations, "success": True}
        )
    return result.rows
