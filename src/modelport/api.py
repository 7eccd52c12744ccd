"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.errors import ModelportError, UnsafeModelError
from modelport.extras import require
from modelport.frameworks import Packed, adapter_for, adapter_for_file, get_adapter
from modelport.frameworks.base import example_rows
from modelport.frameworks.loaded import Model, model_from_files
from modelport.store import ModelStore, ModelVersion

if TYPE_CHECKING:
    from modelport.container.archive import Loaded, Saved
    from modelport.container.provenance import Verified
    from modelport.progress import Progress

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def get_store(store: ModelStore | None = None) -> ModelStore:
    return store or ModelStore()


def register(name: str, packed: Packed, *, framework: str, metrics: dict[str, Any] | None = None,
             tags: dict[str, str] | None = None, description: str = "", store: ModelStore | None = None) -> ModelVersion:
    return get_store(store).save(
        name, packed.files, framework=framework, task=packed.task, signature=packed.signature,
        metrics=metrics, tags=tags, libraries=packed.libraries, extra=packed.extra, description=description,
    )


def save_model(model: Any, name: str, *, framework: str | None = None, feature_names: list[str] | None = None,
               input_example: Any = None, metrics: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
               description: str = "", store: ModelStore | None = None) -> ModelVersion:
    """Register ``model`` as the next version of ``name`` in a safe format."""
    adapter = get_adapter(framework) if framework else adapter_for(model)
    require(adapter.name, f"Saving a model with {adapter.name}")
    packed = adapter.pack(model, feature_names=feature_names, input_example=input_example)
    if packed.signature.get("kind") == "tabular":  # rows to check a conversion to ONNX on (build --runtime onnx)
        packed.extra.update(example_rows(input_example, len(packed.signature["features"])))
    return register(name, packed, framework=adapter.name, metrics=metrics, tags=tags, description=description, store=store)


def import_model(name: str, path: str | Path, *, framework: str | None = None, trust_pickle: bool = False,
                 description: str = "", feature_names: list[str] | None = None,
                 store: ModelStore | None = None) -> ModelVersion:
    """Register a model file. Pickles are converted to a safe format, and only when trusted."""
    path = Path(path)
    if not path.is_file():
        raise ModelportError(f"No such model file: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise UnsafeModelError(
                f"{path.name} is a pickle: loading it runs whatever code it contains. If you trust its source, "
                "pass --trust-pickle and modelport will convert it to a safe format on import."
            )
        require("sklearn", f"Reading the pickle {path.name}")
        import joblib  # reads both pickle and joblib files

        obj = joblib.load(path)
        return save_model(obj, name, framework=framework, description=description, store=store)
    adapter = get_adapter(framework) if framework else adapter_for_file(path)
    require(adapter.name, f"Importing {path.name} ({adapter.name})")
    if feature_names is None:
        packed = adapter.pack_file(path)
    elif adapter.name == "onnx":  # other formats record their own feature names
        packed = adapter.pack_file(path, feature_names=feature_names)  # type: ignore[call-arg]
    else:
        raise ModelportError(f"Feature names can be given only for an ONNX model; {path.name} is {adapter.name}, "
                             "which records its own")
    return register(name, packed, framework=adapter.name, description=description, store=store)


def load_model(ref: str, *, store: ModelStore | None = None) -> Model:
    """Load ``name``, ``name:3`` or ``name@alias``, verifying every artifact file's sha256."""
    store = get_store(store)
    info = store.resolve(ref)
    return model_from_files(info, store.read_files(info))


# -- provenance and offline delivery of built images (container/provenance.py, archive.py) --------

def generate_signing_key(private_key: str | Path, public_key: str | Path | None = None) -> str:
    """A new Ed25519 key pair as PEM files (the private one readable by its owner only); → the key id.
    ``public_key`` defaults to the private key's path with ``.pub.pem``."""
    from modelport.container import signing

    private_key = Path(private_key)
    return signing.generate(private_key, Path(public_key) if public_key else public_key_path(private_key))


def public_key_path(private_key: Path) -> Path:
    return private_key.with_name(private_key.name.removesuffix(".pem") + ".pub.pem")


def sign_image(target: str, private_key: str | Path, *, store: ModelStore | None = None) -> str:
    """Sign a built image (a model reference or an image tag) and its SBOM; → the key id."""
    from modelport.container import provenance
    from modelport.container.build import image_tag

    return provenance.sign(image_tag(target, store), Path(private_key)).key_id


def verify_image(target: str, public_key: str | Path | None = None, *, store: ModelStore | None = None) -> Verified:
    """Check a built image against its statement and SBOM; with ``public_key`` (default: the configured
    MODELPORT_VERIFY_KEY, if any) its signature too. Raises VerificationError; → what was verified."""
    from modelport import config
    from modelport.container import provenance
    from modelport.container.build import image_tag

    key = Path(public_key) if public_key else config.verify_key()
    return provenance.verify(image_tag(target, store), key)


def save_image(target: str, output: str | Path, *, store: ModelStore | None = None,
               progress: Progress = lambda _: None) -> Saved:
    """One tar file holding a built image, its SBOM, statement and signature, each with its sha256."""
    from modelport.container import archive
    from modelport.container.build import image_tag

    return archive.save(image_tag(target, store), Path(output), progress=progress)


def load_image(path: str | Path, public_key: str | Path | None = None, *, progress: Progress = lambda _: None) -> Loaded:
    """Check an archive from ``save_image`` (every checksum; the signature with ``public_key``, default the
    configured MODELPORT_VERIFY_KEY), load its image into the engine and restore its provenance record."""
    from modelport import config
    from modelport.container import archive

    key = Path(public_key) if public_key else config.verify_key()
    return archive.load(Path(path), key, progress=progress)
