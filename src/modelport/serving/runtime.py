"""Models loaded for serving: each with its schema, metrics and batching prepared once."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelport import extras
from modelport.errors import (
    FrameworkError,
    InvalidInputError,
    ModelFailedError,
    ModelNotFoundError,
    ModelOutputError,
    ModelportError,
)
from modelport.extras import MissingExtraError
from modelport.frameworks import Predictor
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.frameworks.loaded import model_from_files
from modelport.serving.batching import BatchConfig, Batcher
from modelport.serving.limits import ImageLimits
from modelport.serving.metrics import ModelMetrics
from modelport.serving.pinning import read_pinned
from modelport.serving.repository import Availability
from modelport.serving.tabular import TabularSchema
from modelport.store import ModelVersion, models_to_serve, parse_ref

if TYPE_CHECKING:
    from modelport.images.classifier import Classifier
    from modelport.store import ModelStore
    from modelport.store.bundle import BundleDirectory

    Models = ModelStore | BundleDirectory  # where models are read from: store.models_to_serve


@dataclass
class ServeSpec:
    """One model to serve: a store reference, the name to serve it under, its batching knobs and (image
    models) what one request may cost."""

    ref: str
    name: str | None = None
    batch: BatchConfig = field(default_factory=BatchConfig)
    images: ImageLimits = field(default_factory=ImageLimits)
    pinned: str | None = None  # a directory with the exact artifact to load (pinning.pin), instead of the store

    @classmethod
    def parse(cls, text: str, batch: BatchConfig | None = None, images: ImageLimits | None = None) -> ServeSpec:
        """``REF`` or ``NAME=REF`` (serve a reference under another name)."""
        name, sep, ref = text.partition("=")
        return cls(ref=ref if sep else text, name=name if sep else None, batch=batch or BatchConfig(),
                   images=images or ImageLimits())


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class TensorRequest:
    """An inference request as the core takes it, whichever protocol carried it (``serving.v2`` decodes
    one): the input tensors by name, and what the protocol said about them."""

    inputs: dict[str, np.ndarray]
    unchecked: frozenset[str] = _NONE  # inputs that may hold NaN or infinity (binary data, FP16/FP32): checked where refused
    raw: frozenset[str] = _NONE  # inputs whose bytes came as they are; BYTES sent as text (JSON) are base64 for files
    outputs: frozenset[str] = _NONE  # the outputs asked for by name (none: the model's usual ones)
    parameters: Mapping[str, Any] = field(default_factory=dict)  # the request's own, e.g. an image model's top_k


Tensors = dict[str, np.ndarray]


class ServedModel:
    """One model as served: everything a request needs, prepared once at load (no HTTP here).

    ``infer`` answers a ``TensorRequest`` with this model's output tensors: the handler for its kind of
    model, chosen here (rows for a tabular model, encoded images for an image classifier, the model's own
    tensors otherwise), so that the protocols only decode requests and encode answers."""

    def __init__(self, name: str, info: ModelVersion, predictor: Predictor, batch: BatchConfig, executor: Executor,
                 images: ImageLimits | None = None, classifier: Classifier | None = None) -> None:
        self.name = name
        self.info = info
        self.version = str(info.version)
        self.predictor = predictor
        self.task = info.task
        # Tabular models, and tensor models shaped like one (one [batch, n] input): the simple API's rows
        self.schema = TabularSchema(info.signature) if "features" in info.signature else None
        self.metrics = ModelMetrics(name, self.version)
        self.executor = executor
        self.batch = batch
        # A model exported with a fixed batch of 1 gets one call per row whatever the batching knobs say.
        self.one_row_per_call = not info.extra.get("batch_axis", True)
        self.batcher = (Batcher(self._call, batch, executor, self.metrics.observe_batch)
                        if batch.enabled and not self.one_row_per_call else None)
        # A small tabular model's call costs less than a hop to another thread; an image model's does not.
        self.inline = info.task != IMAGE_CLASSIFICATION
        self.headers = {"x-model": name, "x-model-version": self.version}
        self.raw_headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        self.classifier = classifier  # image classifiers: labels, preprocessing, decode pool
        self.image_limits = (images or ImageLimits()).resolved()
        # The tensors the model takes and gives: a tabular model's one [N, n_features] FP64 input and its
        # "predictions" (and "probabilities"); a tensor model keeps its own names here even when the simple
        # API serves it as rows.
        self.tabular = info.signature.get("kind") == "tabular"
        self.input_specs, self.output_specs = _tensor_specs(info.signature, self.tabular)
        self.infer: Callable[[TensorRequest], Awaitable[Tensors]] = (
            self._infer_images if info.task == IMAGE_CLASSIFICATION else
            self._infer_rows if self.tabular else self._infer_tensors)

    def _call(self, x: np.ndarray) -> np.ndarray:
        return self.predictor.predict(x)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict rows: through the batcher when batching is on, else in one call per request
        (inline for a tabular model, in the executor for an image model)."""
        self.metrics.add_rows(len(x))
        if self.predictor.input_limit is not None:
            self._check_range(x, self.predictor.input_limit)
        try:
            if self.batcher is not None:
                y = await self.batcher.submit(x)
            elif self.inline:
                self.metrics.observe_batch(len(x))
                y = self._call(x)
            else:
                y = await self._offload(x)
        except Exception as e:
            raise self.failed(e, "predict") from e
        return self._finite(y, "prediction")

    async def _offload(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        chunks = [x[i:i + 1] for i in range(len(x))] if self.one_row_per_call else [x]
        parts = []
        for chunk in chunks:
            self.metrics.observe_batch(len(chunk))
            parts.append(await loop.run_in_executor(self.executor, self._call, chunk))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def predict_simple(self, payload: Any) -> dict[str, Any]:
        """The simple API's request (``{"features": ...}`` or ``{"instances": ...}``, optional
        ``"probabilities": true``) -> its answer, for models whose inputs are one table of rows."""
        if self.schema is None:
            raise InvalidInputError(f"/predict is not available for model {self.name!r}: its inputs are not one table of "
                                    f"rows (one numeric [batch, n] input, one output). Use POST /v2/models/{self.name}/infer")
        # No finiteness check here: the JSON decoder refuses NaN, Infinity and numbers that overflow,
        # and a null becomes NaN only for models that accept missing values.
        x, single = self.schema.parse(payload)
        probabilities = payload.get("probabilities", False)
        if type(probabilities) is not bool:
            raise InvalidInputError(f'"probabilities" must be true or false, got {orjson.dumps(probabilities).decode()[:40]}')
        y = (await self.predict(x)).tolist()
        out: dict[str, Any] = {"prediction": y[0]} if single else {"predictions": y}
        if probabilities:
            if self.schema.classes is None:
                raise InvalidInputError(f"Model {self.name!r} is a {self.task} model: it has no class probabilities")
            probs = self.schema.probabilities(await self.predict_proba(x))
            out["probabilities"] = probs[0] if single else probs
        return out

    async def classify(self, images: list[bytes], k: int, where: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Encoded images -> ([N, classes] probabilities, [N, k] indices of the best classes, best first).
        All of them together may decode to at most ``image_limits.max_request_pixels``; an error about
        image i starts with ``{where}[i]: `` when ``where`` is given."""
        clf = self.classifier
        if clf is None:
            raise ModelFailedError(f"Model {self.name!r} is not an image classifier")
        x = await clf.decode_all(images, self.image_limits.max_request_pixels, where)
        probs = clf.probabilities(await self.predict(x))
        return probs, clf.best(probs, k)

    async def predict_proba(self, x: np.ndarray) -> np.ndarray:
        try:
            proba = await asyncio.get_running_loop().run_in_executor(self.executor, self.predictor.predict_proba, x)
        except (FrameworkError, NotImplementedError) as e:  # a classifier without them: the request asks too much
            raise InvalidInputError(f"Model {self.name!r} cannot give probabilities: {e}") from e
        except Exception as e:
            raise self.failed(e, "give probabilities") from e
        return self._finite(proba, "probabilities")

    # -- the handlers of a TensorRequest, one chosen at load (``infer``) ---------------------------

    async def _infer_rows(self, request: TensorRequest) -> Tensors:
        """A tabular model: one [N, n_features] tensor, or one per feature → predictions (and
        probabilities, when asked for by name and the model is a classifier)."""
        assert self.schema is not None
        x = self.schema.rows_from_tensors(request.inputs, request.unchecked)
        outputs = {"predictions": await self.predict(x)}
        if "probabilities" in request.outputs and self.schema.classes is not None:
            outputs["probabilities"] = await self.predict_proba(x)
        return outputs

    async def _infer_images(self, request: TensorRequest) -> Tensors:
        """One BYTES input of N encoded images ([N] or [N, 1]; base64 when sent as text) → ``probabilities``
        FP32 [N, classes], ``labels`` BYTES [N, k], ``confidences`` FP32 [N, k] (``top_k`` parameter)."""
        from modelport.images.classifier import limit_error  # an image server has imported it already

        clf = self.classifier
        if clf is None:
            raise ModelFailedError(f"Model {self.name!r} is not an image classifier")
        if len(request.inputs) != 1:
            raise InvalidInputError(f"The model takes one BYTES input (the encoded image files), got {len(request.inputs)} inputs")
        ((name, arr),) = request.inputs.items()
        if arr.dtype != object:
            raise InvalidInputError(f"Input {name!r} must be BYTES: the encoded image files (JPEG, PNG, ...)")
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1) or arr.shape[0] == 0:
            raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; send [N] or [N, 1] images, N >= 1")
        limits = self.image_limits
        if arr.shape[0] > limits.max_images:  # before any decoding: 1,500 tiny images once took a worker to 15 GB
            raise limit_error(f"Input {name!r} has {arr.shape[0]} images; the limit is {limits.max_images} per request",
                              "max_images")
        raw = name in request.raw
        items = [item if raw else _unbase64(item, name, i) for i, item in enumerate(arr.reshape(-1))]
        k = clf.top_k(request.parameters.get("top_k"))
        probs, best = await self.classify(items, k, f"Input {name!r}")
        return {"probabilities": probs.astype(np.float32), "labels": clf.labels[best],
                "confidences": np.take_along_axis(probs, best, axis=1).astype(np.float32)}

    async def _infer_tensors(self, request: TensorRequest) -> Tensors:
        """Any other model: its own inputs by name, checked against its signature, → its own outputs."""
        inputs = self._checked_tensors(request.inputs)
        # The inputs were checked against the signature (names, shapes, dtypes): what fails now is the model.
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.predictor.infer, inputs)
        except Exception as e:
            raise self.failed(e, "run") from e
        for name, arr in outputs.items():
            self._finite(np.asarray(arr), f"output {name!r}")
        return outputs

    def _checked_tensors(self, tensors: Tensors) -> Tensors:
        expected = {s["name"]: s for s in self.input_specs}
        missing = [n for n in expected if n not in tensors]
        unknown = [n for n in tensors if n not in expected]
        if missing or unknown:
            raise InvalidInputError(f"The model's inputs are {', '.join(expected)}; "
                                    + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"))
        out = {}
        for name, spec in expected.items():
            arr = tensors[name]
            want = spec["shape"]
            if len(want) != arr.ndim or any(w not in (-1, a) for w, a in zip(want, arr.shape, strict=True)):
                raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; the model expects {want} (-1: any size)")
            if spec["dtype"] not in ("string", "object"):
                if arr.dtype == object:
                    raise InvalidInputError(f"Input {name!r} must be numeric ({spec['dtype']})")
                arr = arr.astype(spec["dtype"], copy=False)
            out[name] = arr
        return out

    def failed(self, error: Exception, what: str) -> ModelportError:
        """What a model's exception becomes: the inputs were checked before the call, so an unexpected
        exception is the model's failure (a 5xx), never the client's; a domain error keeps its meaning."""
        if isinstance(error, ModelportError):
            return error
        return ModelFailedError(f"Model {self.name!r} failed to {what}: {type(error).__name__}: {error}")

    def _check_range(self, x: np.ndarray, limit: float) -> None:
        """Models that compute in float32 fail (or overflow to infinity) on larger values: refuse them."""
        magnitude = np.abs(x)
        if not magnitude.size or not magnitude.max() > limit:  # NaN is no overflow: the NaN rules apply
            return
        row, col = np.unravel_index(np.argmax(magnitude > limit), x.shape)
        where = f"feature {self.schema.features[col]!r}" if self.schema is not None and x.ndim == 2 else "a value"
        raise InvalidInputError(f"Row {row}: {where} is {x[row, col]:g}, beyond what model {self.name!r} takes: "
                                f"it computes in float32, whose largest value is {limit:.4g}")

    def _finite(self, y: np.ndarray, what: str) -> np.ndarray:
        """A model's NaN or infinity is no prediction: never pass it off as one (JSON would show null)."""
        if y.dtype.kind in "fc" and not np.isfinite(y).all():
            raise ModelOutputError(f"Model {self.name!r} produced a non-finite value (NaN or infinity) as its {what} "
                                   "for this input, so there is no prediction to return; inputs far outside "
                                   "the training data can overflow the model's arithmetic")
        return y


def _tensor_specs(signature: dict[str, Any], tabular: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as ``{"name", "dtype" (numpy's name, or "string"), "shape" (-1: any size)}``."""
    if tabular:
        outputs = [{"name": "predictions", "dtype": signature["output"]["dtype"], "shape": [-1]}]
        if signature.get("classes") is not None:
            outputs.append({"name": "probabilities", "dtype": "float64", "shape": [-1, len(signature["classes"])]})
        return [{"name": "input", "dtype": "float64", "shape": [-1, len(signature["features"])]}], outputs
    return ([{"name": t["name"], "dtype": t["dtype"], "shape": t["shape"]} for t in signature.get("inputs", [])],
            [{"name": t["name"], "dtype": t["dtype"], "shape": t["shape"]} for t in signature.get("outputs", [])])


def _unbase64(item: bytes, name: str, i: int) -> bytes:
    # Text cannot carry binary: sent as text (JSON strings), BYTES image data is base64 (KServe's convention).
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"Input {name!r}[{i}]: BYTES sent as JSON must be the base64 of an image file "
                                "(or send it as binary data)") from None


class ModelSet:
    """The served models by name and version; the first one is the default for ``/predict``."""

    def __init__(self, models: list[ServedModel], pools: list[Executor] | None = None) -> None:
        if not models:
            raise ModelportError("No models to serve")
        self.pools = pools or []  # the models' executor and decoding threads: closed with the set
        self.default = models[0]
        self.by_name: dict[str, dict[str, ServedModel]] = {}
        for m in models:
            self.by_name.setdefault(m.name, {}).setdefault(m.version, m)
        self.latest = {name: versions[next(iter(versions))] for name, versions in self.by_name.items()}
        self.availability = Availability()  # which are unloaded (the repository extension); create_app may share it

    def close(self) -> None:
        """Stop the threads: the app's lifespan calls this once the server has stopped taking requests.
        A model call still running is not waited for (its request is gone with the server)."""
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self):
        for versions in self.by_name.values():
            yield from versions.values()

    def get(self, name: str, version: str | None = None) -> ServedModel:
        versions = self.by_name.get(name)
        if versions is None:
            raise ModelNotFoundError(f"Model {name!r} is not served here (served: {', '.join(self.by_name)})")
        if version is None:
            return self.latest[name]
        model = versions.get(version)
        if model is None:
            raise ModelNotFoundError(f"Model {name!r} version {version} is not served here (versions: {', '.join(versions)})")
        return model


def load_models(specs: list[ServeSpec], store: Models | None = None) -> ModelSet:
    """Load every model or fail with a message naming the one that could not load."""
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modelport-model")
    pools: list[Executor] = [executor]
    models = []
    for spec in specs:
        try:
            if spec.pinned:  # a worker's: no store to open
                info, files = read_pinned(Path(spec.pinned))
            else:
                store = store or models_to_serve()
                info, files = _from_store(spec.ref, store)
            model = model_from_files(info, files)
        except ModelportError as e:
            raise ModelportError(f"Cannot serve {spec.ref}: {e}") from None
        except Exception as e:
            raise ModelportError(f"Cannot serve {spec.ref}: loading failed with {type(e).__name__}: {e}") from None
        name = spec.name or parse_ref(spec.ref).name
        batch = spec.batch.over(model.info.extra.get("batching"))
        classifier = None
        if model.info.task == IMAGE_CLASSIFICATION:
            classifier = _classifier(model.info, files, pools)
        models.append(ServedModel(name, model.info, model.predictor, batch, executor, spec.images, classifier))
    return ModelSet(models, pools)


def _classifier(info: ModelVersion, files: dict[str, bytes], pools: list[Executor]) -> Classifier:
    """An image classifier's serving state; the first one starts the set's decoding threads."""
    from modelport.images import classifier  # Pillow: imported by image servers only

    labels = classifier.read_labels(info, files)
    if len(pools) == 1:
        pools.append(ThreadPoolExecutor(max_workers=classifier.decode_threads(), thread_name_prefix="modelport-decode"))
    return classifier.Classifier(info, labels, pools[1])


def _from_store(ref: str, store: Models) -> tuple[ModelVersion, dict[str, bytes]]:
    info = store.resolve(ref)
    return info, store.read_files(info)


def check_models(specs: list[ServeSpec], store: Models | None = None) -> list[ModelVersion]:
    """What can be checked without importing any framework: each reference resolves, its artifact
    files match their sha256, and its framework's library is installed."""
    import importlib.util

    from modelport.frameworks import get_adapter

    store = store or models_to_serve()
    versions = []
    for spec in specs:
        try:
            info = store.resolve(spec.ref)
            store.read_files(info)
            modules = [get_adapter(info.framework).module]
        except ModelportError as e:
            raise ModelportError(f"Cannot serve {spec.ref}: {e}") from None
        if info.task == IMAGE_CLASSIFICATION:
            modules += ["PIL", "python_multipart"]  # decoding uploads, parsing forms
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            extra = "image" if info.task == IMAGE_CLASSIFICATION else info.framework
            raise MissingExtraError(extra, f"Serving {spec.ref}", extras.missing(extra) or absent)
        versions.append(info)
    return versions


def describe(models: ModelSet) -> list[dict[str, Any]]:
    return [{"name": m.name, "version": m.version, "framework": m.info.framework, "task": m.task,
             "sha256": m.info.digest, "batching": asdict(m.batch),
             **({"features": m.schema.features} if m.schema is not None else {}),
             **({"image_limits": asdict(m.image_limits)} if m.task == IMAGE_CLASSIFICATION else {})} for m in models]
