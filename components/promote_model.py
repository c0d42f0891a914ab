"""Component: move the champion alias to the registered version and write the KServe manifest."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(manifest="KServe InferenceService manifest (YAML) serving the new champion.")
def promote_model(
    tracking_uri: str,
    serving_namespace: str,
    registration: Input[Artifact],
    manifest: Output[Artifact],
) -> str:
    """Promote the version in ``registration`` to champion; write the InferenceService YAML; return the URI."""
    from mdctr.steps.promote_model import PromoteConfig
    from mdctr.steps.promote_model import promote_model as step

    name, version = str(registration.metadata["name"]), str(registration.metadata["version"])
    result = step(
        manifest_path=manifest.path,
        config=PromoteConfig(
            tracking_uri=tracking_uri, name=name, version=version, namespace=serving_namespace
        ),
    )
    manifest.metadata.update({"model_uri": result.model_uri, "version": version, "name": result.service_name})
    return result.model_uri
