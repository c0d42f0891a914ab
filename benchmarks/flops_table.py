"""FLOPs per sample of every registered model × accepted domain source at the default budget.

Prints, per entry, the FLOPs at the model's default sizes (width 1), the width fitted to the budget and the
FLOPs at that width, counted on the first validation rows of ML-1M (users 1–2999, as ``make run``). A miner
for the ``mined`` entries is pre-trained for one epoch (seeded, deterministic on CPU). Used to check that a
refactor leaves every FLOP number bit-identical:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flops_table.py --source ../shared/datasets > /tmp/flops.txt
"""

from __future__ import annotations

import argparse
import os

import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.domains.miner import MinerConfig, fit_miner
from mdctr.models import model_class, model_names
from mdctr.routing import DomainRouting, count_batch
from mdctr.routing.budget import FLOP_BUDGET_DEFAULT, fit_width, model_flops, resolve_budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("DATASETS_DIR", "../shared/datasets"))
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--budget", default=FLOP_BUDGET_DEFAULT)
    args = parser.parse_args()
    torch.set_num_threads(1)

    prepared = prepare_in_memory(load_dataset(args.dataset, args.source))
    plain = DomainRouting.for_source("none").route(prepared)
    budget = resolve_budget(args.budget, plain.inputs, count_batch(plain.data.valid))
    miner = fit_miner(prepared.train, plain.inputs, MinerConfig(epochs=1))
    print(f"budget {args.budget} = {budget!r} FLOPs/sample")
    print("entry\tflops_width1\tfitted_width\tfitted_flops")
    for name in model_names():
        for source in model_class(name).domain_sources:
            routing = DomainRouting.for_model(name, source, miner=miner if source == "mined" else None)
            routed = routing.route(prepared)
            batch = count_batch(routed.data.valid)
            at_one = model_flops(name, routed.inputs, 1.0, batch, routing=routing)
            fitted = fit_width(name, routed.inputs, budget, batch, routing=routing)
            print(f"{name}/{source}\t{at_one!r}\t{fitted.width!r}\t{fitted.flops!r}")


if __name__ == "__main__":
    main()
