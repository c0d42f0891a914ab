"""mdctr: multi-domain CTR prediction with mined domains, at matched FLOPs, as a Kubeflow pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mdctr")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

# The container image every component and the serving deployment use: one definition, tagged by version.
IMAGE_REPOSITORY = "ghcr.io/mdctr/mdctr"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
