"""No import circle among mdctr's modules: no two modules import each other, directly or through others.

import-linter's layers contract keeps packages in order but allows a circle inside one package (it is how
``steps.train_model`` and ``steps.train_remote`` once imported each other). The module graph comes from grimp
(what import-linter builds on); it counts every import, those inside functions included. A circle is a strongly
connected component of more than one module.
"""

from __future__ import annotations

import grimp
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The modules of each import circle in ``graph`` (each circle sorted; none → ``[]``)."""
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = [(index[m], index[t]) for m in modules for t in graph.find_modules_directly_imported_by(m)]
    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    adjacency = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(modules), len(modules)))
    count, labels = connected_components(adjacency, directed=True, connection="strong")
    cycles = [[modules[i] for i in np.flatnonzero(labels == c)] for c in range(count)]
    return sorted(c for c in cycles if len(c) > 1)


def test_the_cycle_finder_finds_a_circle_through_a_third_module() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_no_module_of_mdctr_is_in_an_import_circle() -> None:
    graph = grimp.build_graph("mdctr", cache_dir=None)
    assert "mdctr.steps.train_model" in graph.modules  # the graph is the real package
    assert import_cycles(graph) == []
