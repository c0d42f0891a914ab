"""KFP pipeline definitions (the DAG); compile, submit and run them through :mod:`mdctr.pipeline`."""
