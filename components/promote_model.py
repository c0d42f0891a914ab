"""Component: write the KServe manifest for the registered version, then move the champion alias to it."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(manifest="KServe InferenceService manifest (YAML) serving the new champion.")
def promote_model(
    tracking_uri: str,
    serving_namespace: str,
    canary_percent: int,
    registration: Input[Artifact],
    manifest: Output[Artifact],
) -> str:
    """Write the InferenceService YAML for the version in ``registration``, then make it champion, or, with
    ``canary_percent`` > 0 and a champion in place, the canary beside it (alias last, with a history entry);
    return the URI."""
    from mdctr.steps.promote_model import PromoteConfig
    from mdctr.steps.promote_model import promote_model as step

    name, version = str(registration.metadata["name"]), str(registration.metadata["version"])
    result = step(
        manifest_path=manifest.path,
        config=PromoteConfig(
            tracking_uri=tracking_uri,
            name=name,
            version=version,
            namespace=serving_namespace,
            canary_percent=canary_percent,
            reason=str(registration.metadata.get("reason", "")),  # the gate's, for the champion history
        ),
    )
    manifest.metadata.update(
        {
            "model_uri": result.model_uri,
            "version": version,
            "name": result.service_name,
            "alias": result.alias,
        }
    )
    return result.model_uri
