"""Monitoring served traffic: drift of a served-request log window against the serving version's training data.

Per feature PSI (sparse: top-K categories + other + OOV, with the OOV share; dense: reference-quantile bins, and
KS on reservoir samples), the shares of hand-crafted and mined domains, per-domain AUC / logloss / calibration
when labels arrive, and a Great Expectations checkpoint on a sample of the window. Entry points:
:func:`mdctr.monitoring.run.monitor` and :func:`mdctr.monitoring.report.write_report`; the pipeline step is
:mod:`mdctr.steps.monitor`. Importing this package is cheap (defaults only).
"""

#: PSI above 0.25 is the usual "major shift" cut-off for a feature
DEFAULT_MAX_PSI = 0.25
#: the window's OOV share may exceed the valid split's by at most 10 points per sparse feature
DEFAULT_MAX_OOV_SHARE = 0.10
#: the domain mix is the signal the monitor exists for: PSI above 0.1 ("moderate") is flagged
DEFAULT_MAX_DOMAIN_PSI = 0.10
