"""modelport: from a trained model to a running, monitored container service."""

from importlib.metadata import PackageNotFoundError, version

from modelport.api import Model, get_store, import_model, load_model, save_model
from modelport.store import ModelStore, ModelVersion

try:
    __version__ = version("modelport")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["Model", "ModelStore", "ModelVersion", "__version__", "get_store", "import_model", "load_model", "save_model"]
