"""Pretrained models ready to export and serve (torch is imported only when exporting)."""

from modelport.images.pretrained.mobilenet_v2 import IMAGENET_PREPROCESS, export_onnx, load_labels, resolve_weights

__all__ = ["IMAGENET_PREPROCESS", "export_onnx", "load_labels", "resolve_weights"]
