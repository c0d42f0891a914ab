"""Component: the exit handler; marks the MLflow parent run FAILED (task + message) when the DAG failed."""

from kfp import dsl

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def finish_run(tracking_uri: str, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Close the parent run(s) of ``kfp_run_id`` according to ``status``; return the final state.

    Runs whether the DAG succeeded or not. On a cluster ``status.error_message`` carries the backend's account
    of the failure; the local runner names the failed group.
    """
    from mdctr.steps.fetch_data import finish_run as step

    failed_task = status.pipeline_task_name or ""
    message = status.error_message or ""
    step(
        tracking_uri=tracking_uri,
        kfp_run_id=kfp_run_id,
        state=status.state,
        failed_task=failed_task,
        message=message,
    )
    return status.state
