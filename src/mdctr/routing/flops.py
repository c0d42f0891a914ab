"""The FLOP definition: forward FLOPs per sample of the actual routed computation, in eval mode.

Counted by :class:`torch.utils.flop_counter.FlopCounterMode`, so its convention holds everywhere: a
multiply-add is 2 FLOPs, matrix products (``mm``, ``addmm``, ``bmm``, …) are counted and elementwise ops,
normalisation, reductions, indexing and embedding lookups count zero. Formulas are added below for the
matrix-like ops that the counter lacks (``mv``, ``addmv``, ``dot``, ``vdot``, ``_cdist_forward``), so that a
model cannot look cheap by calling them; :func:`op_census` lists which ops a forward runs, and the contract
test checks every registered model against :data:`ZERO_COST_OPS`.

Routing matters: a batch with the real domain mix is needed (e.g. the first 4096 validation rows), because
domain towers only see their own rows. When the routing domain comes from a separately pre-trained miner, its
forward is part of serving and is counted too.

:data:`FLOP_BUDGET_DEFAULT` is the one configured budget (see :mod:`mdctr.routing.budget`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from mdctr.data.tensors import Batch, TensorData

aten = torch.ops.aten

#: the FLOP budget every model is fitted to: "model:NAME" = that model's FLOPs at width 1, or a number
FLOP_BUDGET_DEFAULT: str = "model:dnn"
#: rows of the batch FLOPs are counted on (first rows of the validation split: its real domain mix)
COUNT_ROWS = 4096


def _mv_flop(a_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    m, n = a_shape
    return 2 * m * n


def _addmv_flop(self_shape: Any, a_shape: Any, v_shape: Any, *args: Any, **kwargs: Any) -> int:
    return _mv_flop(a_shape, v_shape)


def _dot_flop(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a_shape[0]


def _cdist_flop(x1_shape: Any, x2_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # x1 [*, P, M], x2 [*, R, M]: per pair and coordinate a difference, a square and an accumulation
    *batch, p, m = x1_shape
    r = x2_shape[-2]
    return 3 * math.prod(batch) * p * r * m


#: formulas for matrix-like ops FlopCounterMode does not count by default (passed as its custom_mapping)
EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.mv: _mv_flop,
    aten.addmv: _addmv_flop,
    aten.dot: _dot_flop,
    aten.vdot: _dot_flop,
    aten._cdist_forward: _cdist_flop,
}

#: ops that cost zero FLOPs by the FlopCounterMode convention (elementwise, reductions, normalisation,
#: indexing, shape and memory ops); any other uncounted op in a model is a contract-test failure
_ZERO_COST_OP_NAMES = """
    abs add addcmul alias amax amin any all argmax argmin argsort as_strided bernoulli bincount bitwise_and
    cat clamp clamp_min clamp_max clone copy copy_ cumsum detach div embedding empty empty_like empty_strided
    eq exp expand fill fill_ full full_like ge gather gelu gt index index_add index_copy index_copy_
    index_put index_put_ index_select isnan le leaky_relu linalg_vector_norm log log_softmax logsumexp lt
    masked_fill max maximum mean min minimum mul native_batch_norm native_dropout native_layer_norm ne neg
    new_empty new_empty_strided new_zeros new_ones norm ones ones_like permute pow reciprocal relu
    repeat rsqrt rsub scatter scatter_add scatter_add_ select sigmoid silu slice softmax sort split
    split_with_sizes sqrt squeeze stack sub sum t tanh topk transpose unbind unsafe_view unsqueeze var
    var_mean view where zero_ zeros zeros_like _batch_norm_no_update _batch_norm_with_update
    _native_batch_norm_legit _native_batch_norm_legit_no_training _local_scalar_dense _softmax
    _log_softmax _to_copy _unsafe_view _reshape_alias lift_fresh arange sgn sign std square
    masked_select nonzero repeat_interleave le_ relu_ sigmoid_ tanh_ mul_ add_ div_ sub_ _unique2
    unique_consecutive searchsorted one_hot scalar_tensor hardtanh threshold
"""
ZERO_COST_OPS: frozenset[str] = frozenset(_ZERO_COST_OP_NAMES.split())

COUNTED_OPS: frozenset[str] = frozenset(
    str(getattr(op, "__name__", op)).split(".")[-1] for op in (*flop_registry, *EXTRA_FLOP_FORMULAS)
)


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def _eval(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Eval mode for the duration (restoring each module's mode), without gradients."""
    present = [m for m in modules if m is not None]
    modes = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(present, modes, strict=True):
            m.train(mode)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(iter(module.parameters()), torch.empty(0)).device


def _serve(model: torch.nn.Module, batch: Batch, miner: torch.nn.Module | None) -> torch.Tensor:
    batch = batch.to(_device_of(model))
    if miner is not None:
        batch = dataclasses.replace(batch, domain=miner(batch.to(_device_of(miner))).to(batch.domain.device))
    return model(batch)


def flops_per_sample(model: torch.nn.Module, batch: Batch, miner: torch.nn.Module | None = None) -> float:
    """Forward FLOPs per sample (eval mode) of ``model`` on ``batch``.

    Args:
        model: a CTR model; its routing uses ``batch.domain`` (or the miner's codes).
        batch: B rows with a realistic domain mix (e.g. :func:`count_batch` of the validation split).
        miner: a separate pre-trained domain miner whose forward produces the routing domain at serving
            time; its FLOPs are added and its codes replace ``batch.domain``.

    Returns:
        total counted FLOPs / B.
    """
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with _eval(model, miner), counter:
        _serve(model, batch, miner)
    return counter.get_total_flops() / max(len(batch), 1)


def flop_breakdown(
    model: torch.nn.Module, batch: Batch, miner: torch.nn.Module | None = None
) -> dict[str, float]:
    """FLOPs per sample by op name (e.g. ``{"addmm": 9.1e4}``) — what :func:`flops_per_sample` sums."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with _eval(model, miner), counter:
        _serve(model, batch, miner)
    n = max(len(batch), 1)
    return {str(op).split(".")[-1]: v / n for op, v in counter.get_flop_counts()["Global"].items()}


def op_census(model: torch.nn.Module, batch: Batch, miner: torch.nn.Module | None = None) -> Counter[str]:
    """How often each aten op runs in one eval forward (to check nothing costly escapes counting)."""
    recorder = _OpRecorder()
    with _eval(model, miner), recorder:
        _serve(model, batch, miner)
    return recorder.ops


def uncounted_ops(model: torch.nn.Module, batch: Batch, miner: torch.nn.Module | None = None) -> set[str]:
    """Ops a forward runs that are neither counted nor known to be free: should be empty."""
    return {op for op in op_census(model, batch, miner) if op not in COUNTED_OPS and op not in ZERO_COST_OPS}


def count_batch(data: TensorData, rows: int = COUNT_ROWS) -> Batch:
    """The batch FLOPs are counted on: the first ``rows`` rows (splits are shuffled, so the mix is real)."""
    return data.batch(0, min(rows, len(data)))
