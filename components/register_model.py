"""Component: register the winner as an MLflow pyfunc (alias challenger) and decide the promotion gate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    prepared="Prepared splits: the validation split re-scores champion and challenger at the gate.",
    evaluation_report="The evaluate step's HTML report, written before the gate decided.",
    report="The run's final report (HTML): the evaluation report with the gate decision and its reason.",
)
def register_model(
    tracking_uri: str,
    parent_run_id: str,
    tolerance: float,
    registered_model: str,
    winner: Input[Model],
    prepared: Input[Dataset],
    evaluation_report: Input[HTML],
    registration: Output[Artifact],
    report: Output[HTML],
) -> str:
    """Register ``winner``; write the registration (version, URI, gate) to ``registration`` and the final report
    (the evaluation report with the gate decision) to ``report``; return the gate decision (``promote``/``keep``).

    The decision is the single return value because the KFP 2.17 local runner resolves a ``dsl.If`` only on a
    task's ``Output``; the version travels on the ``registration`` artifact.
    """
    import json

    from mdctr.steps.register_model import RegisterConfig
    from mdctr.steps.register_model import register_model as step

    result = step(
        winner_dir=winner.path,
        prepared_dir=prepared.path,  # the gate re-scores champion and challenger on this validation split
        evaluation_report=evaluation_report.path,
        report_path=report.path,  # the evaluation report again, with the decision filled in
        config=RegisterConfig(
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
            tolerance=tolerance,
            model_name=registered_model,
        ),
    )
    fields = {
        "decision": result.decision,
        "name": result.name,
        "version": result.version,
        "model_uri": result.model_uri,
        "winner": str(winner.metadata.get("entry", "")),
    }
    with open(registration.path, "w") as f:
        json.dump({**fields, "reason": result.reason, "gate": result.gate}, f, indent=2)
    registration.metadata.update({**fields, "reason": result.reason})
    return result.decision
