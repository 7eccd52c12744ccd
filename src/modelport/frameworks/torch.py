"""PyTorch models as TorchScript: a program format that loads without unpickling Python objects."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import FrameworkError
from modelport.frameworks.base import TENSOR, Packed, Predictor, versions_of

FILE_NAME = "model.torchscript"
_DTYPES = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32", "uint8": "uint8", "bool": "bool"}


class TorchPredictor(Predictor):
    def __init__(self, module: Any, signature: dict[str, Any]) -> None:
        self.module = module
        self.inputs = [i["name"] for i in signature["inputs"]]
        self.outputs = [o["name"] for o in signature["outputs"]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.infer({self.inputs[0]: x})[self.outputs[0]]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.inputs))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.numpy() for n, o in zip(self.outputs, outs, strict=True)}


class TorchAdapter:
    name = "torch"
    module = "torch"
    requirements = ("torch", "numpy")

    def accepts(self, obj: Any) -> bool:
        return any(c.__module__.startswith("torch.") and c.__name__ in ("Module", "ScriptModule") for c in type(obj).__mro__)

    def pack(self, obj: Any, *, feature_names: list[str] | None = None, input_example: Any = None) -> Packed:
        import torch

        if input_example is None:
            raise FrameworkError("Saving a PyTorch model needs input_example= (a tensor or array of one batch)")
        example = torch.as_tensor(np.asarray(input_example))
        obj.eval()
        if not isinstance(obj, torch.jit.ScriptModule):
            try:
                obj = torch.jit.script(obj)
            except Exception:
                obj = torch.jit.trace(obj, example)
        with torch.inference_mode():
            out = obj(example)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        buf = io.BytesIO()
        torch.jit.save(obj, buf)
        return Packed(files={FILE_NAME: buf.getvalue()}, task=TENSOR,
                      signature=_signature(example, outs), libraries=versions_of("torch", "numpy"))

    def accepts_file(self, path: Path, head: bytes) -> bool:
        if path.suffix not in (".pt", ".pth", ".torchscript") or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())  # TorchScript archives carry code/, pickled modules do not

    def pack_file(self, path: Path) -> Packed:
        raise FrameworkError("Import TorchScript files with Python: modelport.save_model(torch.jit.load(path), name, input_example=...)")

    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor:
        import torch

        module = torch.jit.load(io.BytesIO(files[FILE_NAME]), map_location="cpu")
        module.eval()
        return TorchPredictor(module, signature)


def _signature(example: Any, outs: tuple[Any, ...]) -> dict[str, Any]:
    def spec(name: str, t: Any) -> dict[str, Any]:
        dtype = str(t.dtype).removeprefix("torch.")
        return {"name": name, "dtype": _DTYPES.get(dtype, dtype), "shape": [-1, *t.shape[1:]]}

    outputs = [spec("output" if len(outs) == 1 else f"output{i}", o) for i, o in enumerate(outs)]
    return {"kind": "tensor", "inputs": [spec("input", example)], "outputs": outputs}
