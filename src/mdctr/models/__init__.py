"""Model zoo: every model registers itself under a lowercase key (see :mod:`mdctr.models.base`)."""

from mdctr.models import (  # noqa: F401  (registers models)
    adaptdhm,
    adaptive2,
    adasparse,
    dnn,
    epnet,
    hamur,
    m2m,
    m3oe,
    mlora,
    mmoe,
    pepnet,
    ple,
    ppnet,
    sarnet,
    shared_bottom,
    star,
)
from mdctr.models.base import (
    DOMAIN_SOURCES,
    CTRModel,
    ModelInputs,
    build_model,
    model_class,
    model_names,
    register,
)

__all__ = [
    "DOMAIN_SOURCES",
    "CTRModel",
    "ModelInputs",
    "build_model",
    "model_class",
    "model_names",
    "register",
]
