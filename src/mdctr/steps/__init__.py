"""One function per pipeline step, shared by the KFP components (``components/``) and the CLI.

Every step has the same shape: keyword arguments in (paths and one frozen config object), a small frozen
result out. Steps never import kfp; the components are thin adapters over them.

| step | module |
|---|---|
| fetch a data version, open the MLflow parent run | :mod:`mdctr.steps.fetch_data` |
| Great Expectations gate | :mod:`mdctr.steps.validate_data` |
| encode + split | :mod:`mdctr.steps.prepare_data` |
| VQ-VAE domain mining | :mod:`mdctr.steps.mine_domains` |
| the ParallelFor entries | :mod:`mdctr.steps.plan_runs` |
| train one entry at the FLOP budget | :mod:`mdctr.steps.train_model` |
| leaderboard + report + winner | :mod:`mdctr.steps.evaluate` |
| MLflow registration + gate | :mod:`mdctr.steps.register_model` |
| champion alias + KServe manifest | :mod:`mdctr.steps.promote_model` |
| the benchmark grid (``mdctr benchmark``, ``benchmarks/grid.py``) | :mod:`mdctr.steps.grid`, :mod:`mdctr.steps.grid_run` |
"""
