"""Contiguous tensors for training: a batch is a slice, never a per-row ``__getitem__``.

:class:`TensorData` holds one split as four tensors. ``domain`` is the *routing* domain the models see
(hand-crafted ids, mined codes, or zeros for the ``none`` source); ``handcrafted`` always keeps the dataset's
own domain id, which per-domain metrics use whatever the routing source is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from mdctr.schema import FeatureSchema


@dataclass(frozen=True)
class Batch:
    """One mini-batch.

    Attributes:
        sparse: [B, S] int64 vocabulary indices (0 = OOV).
        dense: [B, D] float32 standardised values (D may be 0).
        domain: [B] int64 routing domain in ``range(num_domains)``.
        label: [B] float32 in {0, 1}.
    """

    sparse: torch.Tensor
    dense: torch.Tensor
    domain: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.sparse, self.dense, self.domain, self.label))
        )


@dataclass(frozen=True)
class TensorData:
    """One split as contiguous tensors (see module docstring for ``domain`` vs ``handcrafted``)."""

    sparse: torch.Tensor  # [N, S] int64
    dense: torch.Tensor  # [N, D] float32
    domain: torch.Tensor  # [N] int64
    label: torch.Tensor  # [N] float32
    handcrafted: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @classmethod
    def from_frame(cls, encoded: pd.DataFrame, schema: FeatureSchema) -> TensorData:
        """Build from an encoded frame (output of ``FeatureSpec.encode_frame``)."""
        n = len(encoded)
        sparse = encoded[list(schema.sparse)].to_numpy(dtype=np.int64) if schema.sparse else np.zeros((n, 0))
        dense = encoded[list(schema.dense)].to_numpy(dtype=np.float32) if schema.dense else np.zeros((n, 0))
        dom = torch.from_numpy(encoded[schema.domain].to_numpy(dtype=np.int64).copy())
        return cls(
            sparse=torch.from_numpy(np.array(sparse, dtype=np.int64, order="C")),
            dense=torch.from_numpy(np.array(dense, dtype=np.float32, order="C")),
            domain=dom,
            label=torch.from_numpy(encoded[schema.label].to_numpy(dtype=np.float32).copy()),
            handcrafted=dom.clone(),
        )

    def with_domain(self, domain: torch.Tensor | np.ndarray) -> TensorData:
        """A view of the same rows routed by another domain assignment (mined codes or zeros)."""
        d = torch.as_tensor(domain, dtype=torch.int64)
        if d.shape != self.domain.shape:
            raise ValueError(
                f"domain assignment has shape {tuple(d.shape)}; expected {tuple(self.domain.shape)}"
            )
        return replace(self, domain=d.contiguous())

    def take(self, index: torch.Tensor) -> TensorData:
        return TensorData(
            *(
                t.index_select(0, index)
                for t in (self.sparse, self.dense, self.domain, self.label, self.handcrafted)
            )
        )

    def head(self, n: int) -> TensorData:
        return TensorData(
            *(t[:n] for t in (self.sparse, self.dense, self.domain, self.label, self.handcrafted))
        )

    def batch(self, start: int, stop: int) -> Batch:
        return Batch(
            self.sparse[start:stop], self.dense[start:stop], self.domain[start:stop], self.label[start:stop]
        )

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Yield batches; with ``shuffle`` the whole split is permuted once (one gather), then sliced."""
        data = self.take(torch.randperm(len(self), generator=generator)) if shuffle else self
        for start in range(0, len(data), batch_size):
            yield data.batch(start, start + batch_size)
