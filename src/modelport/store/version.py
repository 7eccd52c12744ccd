"""What the store records about a version, as plain data: no database here (a model image reads these
without SQLAlchemy, from its ``modelport.json``: store.bundle)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version and everything recorded about it."""

    name: str
    version: int
    framework: str
    task: str
    digest: str  # sha256 over the file manifest: identifies the artifact as a whole
    files: dict[str, FileEntry]
    signature: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    created_at: datetime | None = None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "framework": self.framework,
            "task": self.task,
            "sha256": self.digest,
            "files": {k: {"sha256": v.sha256, "size": v.size} for k, v in self.files.items()},
            "signature": self.signature,
            "metrics": self.metrics,
            "tags": self.tags,
            "libraries": self.libraries,
            "extra": self.extra,
            "description": self.description,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelVersion:
        """The inverse of ``to_dict`` (a bundle's or an image's ``modelport.json``)."""
        created = d.get("created_at")
        return cls(name=d["name"], version=int(d["version"]), framework=d["framework"], task=d["task"],
                   digest=d["sha256"], files={k: FileEntry(v["sha256"], int(v["size"])) for k, v in d["files"].items()},
                   signature=d["signature"], metrics=d.get("metrics") or {}, tags=d.get("tags") or {},
                   libraries=d.get("libraries") or {}, extra=d.get("extra") or {}, description=d.get("description", ""),
                   created_at=datetime.fromisoformat(created) if created else None, aliases=tuple(d.get("aliases") or ()))


def manifest_digest(files: Mapping[str, FileEntry]) -> str:
    lines = "".join(f"{name}\0{entry.sha256}\n" for name, entry in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()
