"""The data gate: a Great Expectations suite derived from the :class:`~mdctr.schema.FeatureSchema`.

Great Expectations takes 3–4 s to import, so it is imported only inside the functions of
:mod:`mdctr.validation.gate`; importing this package is cheap.
"""

from mdctr.validation.gate import (
    ExpectationOutcome,
    ExpectationSpec,
    ValidationResult,
    build_suite,
    suite_specs,
    validate_dataset,
    validate_table,
)

__all__ = [
    "ExpectationOutcome",
    "ExpectationSpec",
    "ValidationResult",
    "build_suite",
    "suite_specs",
    "validate_dataset",
    "validate_table",
]
