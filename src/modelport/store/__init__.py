from modelport.store.refs import Ref, parse_ref
from modelport.store.registry import FileEntry, ModelStore, ModelVersion

__all__ = ["FileEntry", "ModelStore", "ModelVersion", "Ref", "parse_ref"]
