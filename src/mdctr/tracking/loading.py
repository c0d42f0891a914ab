"""The one way mdctr loads a *registered* model: download its files, refuse anything executable, then read the
bundle's weights and JSON with :meth:`mdctr.serving.bundle.Predictor.load`.

``mlflow.pyfunc.load_model`` follows whatever the stored ``MLmodel`` says: a ``loader_module`` is imported (from a
shipped ``code/`` folder first), a ``python_model.pkl`` is unpickled. Anyone who can write to the artifact store
could then run code in the promotion gate. So the gate, ``mdctr models promote``/``rollback`` and everything else
that scores a registered version go through :func:`load_registered`, which never imports or unpickles anything
from the store. What ``register_bundle`` logs passes: ``MLmodel`` names the installed loader module
``mdctr.tracking.pyfunc`` and ``data/bundle``, and the files are JSON, YAML, text and ``torch.save`` zip archives
(read with ``weights_only=True``).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: the installed module every model mdctr logs names as its pyfunc ``loader_module``
LOADER_MODULE = "mdctr.tracking.pyfunc"
#: where that pyfunc keeps the bundle inside the model directory (``MLmodel``'s ``python_function.data``)
BUNDLE_PATH = "data/bundle"
#: file name endings of pickles (cloudpickle writes ``.pkl`` or ``.cloudpickle``; joblib ``.joblib``)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")
#: ``python_function`` keys that make MLflow unpickle or import stored code
_EXECUTABLE_KEYS = ("python_model", "cloudpickle_version", "code")


class RegistryError(ValueError):
    """A registry request that cannot be done (unknown version, nothing to roll back to, an unsafe model, …);
    says why in one line."""


class UnsafeModelError(RegistryError):
    """A registered version whose files could make a loader run code from the store; names what was found."""


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded safely: ``predictor`` (the bundle's model), the downloaded ``model_dir``."""

    name: str
    version: str
    model_dir: Path
    predictor: Any  # mdctr.serving.bundle.Predictor


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` starts like a pickle stream (protocol 2–5: ``0x80 <protocol>``).

    ``torch.save`` writes a zip archive (``PK``), which is not flagged here: the bundle loader reads it with
    ``weights_only=True``, whose unpickler accepts tensors and plain containers only.
    """
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def unsafe_findings(model_dir: Path | str) -> list[str]:
    """What in a downloaded MLflow model directory could execute code when loaded by MLflow ([] = nothing).

    Checks ``MLmodel`` (parsed with ``yaml.safe_load``): the ``python_function`` loader module must be
    :data:`LOADER_MODULE`, no ``python_model``/``code`` entry, the data at :data:`BUNDLE_PATH`; and the tree: no
    ``code/`` folder, no pickle by name (:data:`PICKLE_SUFFIXES`) or by content.
    """
    model_dir = Path(model_dir)
    found: list[str] = []
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        found.append("no MLmodel file")
        meta: Any = {}
    else:
        try:
            meta = yaml.safe_load(mlmodel.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            found.append(f"an unreadable MLmodel ({type(e).__name__})")
            meta = {}
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if mlmodel.is_file() and not found:
        if not isinstance(pyfunc, dict):
            found.append("MLmodel has no python_function flavor")
        else:
            loader = pyfunc.get("loader_module")
            if loader != LOADER_MODULE:
                found.append(f"MLmodel loader_module {loader!r} (expected {LOADER_MODULE!r})")
            for key in _EXECUTABLE_KEYS:
                if pyfunc.get(key):
                    found.append(f"MLmodel python_function.{key}={pyfunc[key]!r}")
            if pyfunc.get("data") != BUNDLE_PATH:
                found.append(f"MLmodel data {pyfunc.get('data')!r} (expected {BUNDLE_PATH!r})")
    if (model_dir / "code").exists():
        found.append("a code/ folder")
    pickles = sorted(
        str(p.relative_to(model_dir))
        for p in model_dir.rglob("*")
        if p.is_file() and (p.name.lower().endswith(PICKLE_SUFFIXES) or _is_pickle(p))
    )
    if pickles:
        shown = ", ".join(pickles[:5]) + (f" and {len(pickles) - 5} more" if len(pickles) > 5 else "")
        found.append(f"pickle file(s) {shown}")
    return found


def check_model_dir(model_dir: Path | str, *, label: str) -> Path:
    """The bundle directory of a downloaded model (``<model_dir>/data/bundle``), or :class:`UnsafeModelError`
    naming ``label`` (e.g. ``mdctr-ml-1m v3``) and everything :func:`unsafe_findings` found."""
    found = unsafe_findings(model_dir)
    if found:
        raise UnsafeModelError(
            f"refusing to load {label}: it carries {'; '.join(found)} — only models logged by mdctr "
            f"(loader {LOADER_MODULE}, weights + JSON in {BUNDLE_PATH}) are loaded; re-register it"
        )
    return Path(model_dir) / BUNDLE_PATH


def load_registered(
    tracking_uri: str | None, name: str, version: str | int, *, dst: Path | str | None = None
) -> LoadedVersion:
    """Download version ``version`` of registered model ``name`` (MLflow's artifact API; nothing is imported),
    refuse it if :func:`check_model_dir` finds anything executable, and load its bundle with
    :meth:`mdctr.serving.bundle.Predictor.load` (weights + JSON).

    ``dst``: where to download (default: a temporary directory removed before returning — the predictor is in
    memory, and ``model_dir`` then no longer exists).
    """
    import mlflow

    from mdctr.serving.bundle import Predictor
    from mdctr.tracking.setup import configure

    configure(tracking_uri)
    version = str(version)
    label = f"{name} v{version}"
    with tempfile.TemporaryDirectory(prefix="mdctr-model-") as tmp:
        root = Path(dst) if dst is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model_dir = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(root))
        )
        bundle = check_model_dir(model_dir, label=label)
        try:
            predictor = Predictor.load(bundle)
        except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
            # a bundle that does not load is refused the same way: one line, the version named
            raise UnsafeModelError(f"refusing to load {label}: its bundle does not load: {e}") from None
    log.info("loaded %s through the bundle loader", label)
    return LoadedVersion(name, version, model_dir, predictor)
