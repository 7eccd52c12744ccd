"""The model registry: immutable numbered versions, movable aliases, verified artifacts."""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from modelport import config
from modelport.errors import ModelportError, NotFoundError, RegistryDamagedError, RegistryError, RegistryLostError
from modelport.store.blobs import BlobStore
from modelport.store.refs import Ref, check_alias, check_name, parse_ref
from modelport.store.schema import AliasRow, Base, MetaRow, ModelRow, VersionRow, create_tables, make_engine
from modelport.store.version import FileEntry, ModelVersion, manifest_digest


class ModelStore:
    def __init__(self, home: Path | None = None, db_url: str | None = None, *, adopt_artifacts: bool = False) -> None:
        """Open the store. A registry without tables is created, except over a store that already holds
        artifact files (its registry was deleted, emptied or replaced): that is an error unless
        ``adopt_artifacts`` says to start afresh, and then ``gc`` keeps those files until forced."""
        self.home = Path(home) if home else config.home()
        self.home.mkdir(parents=True, exist_ok=True)
        url = db_url or (f"sqlite:///{self.home / 'registry.db'}" if home else config.db_url())
        self.db_url = url
        self.blobs = BlobStore(self.home / "blobs")
        self._engine = make_engine(url)
        event.listen(self._engine, "handle_error", partial(_raise_if_damaged, url))
        self._session = sessionmaker(self._engine, expire_on_commit=False)
        self._write = sessionmaker(self._engine.execution_options(immediate=True), expire_on_commit=False)
        try:
            if "mode=ro" not in url:
                self._open_tables_waiting(adopt_artifacts)
        except OperationalError as e:
            self.close()
            raise ModelportError(f"Cannot open the model registry database {_safe_url(url)}: {e.orig}") from None
        except BaseException:
            self.close()
            raise

    def _open_tables_waiting(self, adopt_artifacts: bool, timeout: float = 60.0) -> None:
        """``_open_tables``, again while SQLite says "database is locked": processes opening a new store at once
        race to switch it to WAL and create its tables, and SQLite answers some of them at once, without its
        busy timeout, where waiting could deadlock. Opening is idempotent (it looks before it creates)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._open_tables(adopt_artifacts)
            except OperationalError as e:
                if "locked" not in str(e.orig) or time.monotonic() > deadline:
                    raise
                self._engine.dispose()  # a connection that failed half-way is not reused
                time.sleep(0.05)

    def _open_tables(self, adopt_artifacts: bool) -> None:
        if self._has_tables():
            create_tables(self._engine, Base.metadata)  # tables added since the store was made
            return
        orphans = self.blobs.count()
        # Looked again: another process may have created this new store and saved to it in between.
        if orphans and not adopt_artifacts and not self._has_tables():
            raise RegistryLostError(
                f"The model registry {_safe_url(self.db_url)} is empty or missing, but {self.blobs.root} holds "
                f"{orphans} artifact file(s): the registry was deleted, emptied or replaced. Put back a backup of it "
                "(or point MODELPORT_DB_URL at the right database), or run `modelport models new-registry` to start "
                "an empty one that keeps these files, then import your exports (modelport models import FILE)."
            )
        create_tables(self._engine, Base.metadata)
        if orphans and adopt_artifacts:
            with self._write.begin() as s:
                s.merge(MetaRow(key=ADOPTED_AT, value=repr(time.time())))

    def _has_tables(self) -> bool:
        return VersionRow.__tablename__ in inspect(self._engine).get_table_names()

    def close(self) -> None:
        self._engine.dispose()

    # -- writing -----------------------------------------------------------------------------

    def save(
        self,
        name: str,
        files: Mapping[str, bytes],
        *,
        framework: str,
        task: str,
        signature: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        libraries: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        description: str = "",
        version: int | None = None,
        created_at: datetime | None = None,
    ) -> ModelVersion:
        """Register a new version (``version``: that exact number, for copies of a store). Blobs are written first; the version exists only once its
        row commits, so an interrupted save leaves no half version behind."""
        check_name(name)
        if not files:
            raise ModelportError("A model version needs at least one artifact file")
        entries = {fname: FileEntry(self.blobs.put(data), len(data)) for fname, data in files.items()}
        digest = manifest_digest(entries)
        for attempt in range(20):
            try:
                with self._write.begin() as s:
                    model = self._get_or_create_model(s, name, created_at)
                    number = version or (s.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id)) or 0) + 1
                    row = VersionRow(
                        model=model,
                        version=number,
                        framework=framework,
                        task=task,
                        digest=digest,
                        files={k: {"sha256": v.sha256, "size": v.size} for k, v in entries.items()},
                        signature=signature,
                        metrics=metrics or {},
                        tags=tags or {},
                        libraries=libraries or {},
                        extra=extra or {},
                        description=description,
                        created_at=created_at or datetime.now(UTC),
                    )
                    s.add(row)
                    s.flush()
                    return self._to_version(row, ())
            except SQLIntegrityError:
                if version is not None:
                    raise ModelportError(f"{name}:{version} already exists in this store") from None
                # Another process took this number (databases without write locks): try the next.
                if attempt == 19:
                    raise
        raise AssertionError("unreachable")

    def _get_or_create_model(self, s: Session, name: str, created_at: datetime | None = None) -> ModelRow:
        model = s.scalar(select(ModelRow).where(ModelRow.name == name))
        if model is None:
            model = ModelRow(name=name, created_at=created_at or datetime.now(UTC))
            s.add(model)
            s.flush()
        return model

    def set_alias(self, ref: str | Ref, alias: str) -> ModelVersion:
        check_alias(alias)
        mv = self.resolve(ref)
        with self._write.begin() as s:
            model = s.scalar(select(ModelRow).where(ModelRow.name == mv.name))
            row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias))
            if row is None:
                s.add(AliasRow(model_id=model.id, alias=alias, version=mv.version))
            else:
                row.version = mv.version
        return self.resolve(Ref(mv.name, version=mv.version))

    def remove_alias(self, name: str, alias: str) -> None:
        with self._write.begin() as s:
            model = self._model(s, name)
            row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias))
            if row is None:
                raise NotFoundError(f"Model {name!r} has no alias {alias!r}")
            s.delete(row)

    def delete(self, ref: str | Ref) -> list[ModelVersion]:
        """Delete one version (``name:3``, ``name@alias``) or a whole model (``name``).
        Aliases pointing at a deleted version go with it; blobs are collected by ``gc``."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self._write.begin() as s:
            model = self._model(s, ref.name)
            if ref.version is None and ref.alias is None:
                removed = [self._to_version(v, ()) for v in model.versions]
                s.delete(model)
                return removed
            row = self._resolve_row(s, ref)
            removed = [self._to_version(row, ())]
            for a in list(model.aliases):
                if a.version == row.version:
                    s.delete(a)
            s.delete(row)
            s.flush()
            if not s.scalar(select(func.count()).select_from(VersionRow).where(VersionRow.model_id == model.id)):
                s.delete(model)
            return removed

    def gc(self, *, min_age_s: float = 3600, force: bool = False) -> list[str]:
        """Delete artifact files no version refers to. Files older than a registry that was started over
        them (``adopt_artifacts``) may be versions it merely forgot: refused unless ``force``."""
        with self._session() as s:
            referenced = {sha for files in s.scalars(select(VersionRow.files)) for sha in (f["sha256"] for f in files.values())}
            adopted = s.get(MetaRow, ADOPTED_AT)
        doomed = self.blobs.unreferenced(referenced, min_age_s=min_age_s)
        absent = [d for d in referenced if not self.blobs.path(d).is_file()]
        if doomed and absent and not force:
            # Versions whose files are not here: this registry may be another store's (copied over this
            # one), and the files it does not know may be this store's versions.
            raise RegistryError(
                f"Not deleting anything: this registry refers to {len(absent)} artifact file(s) that are not in "
                f"{self.blobs.root} (e.g. sha256 {sorted(absent)[0][:12]}…), so it may not be this store's registry "
                f"and the {len(doomed)} file(s) it does not know may be versions of yours. Put this store's "
                "registry back, or `modelport models gc --force` to delete them anyway."
            )
        if adopted is not None and not force:
            forgotten = [d for d, mtime in doomed.items() if mtime < float(adopted.value)]
            if forgotten:
                raise RegistryError(
                    f"Not deleting {len(forgotten)} artifact file(s) that predate this registry: it was started "
                    "empty over an existing store (modelport models new-registry), so they may belong to versions "
                    "it never heard of. Import your exports first; `modelport models gc --force` deletes them."
                )
        return self.blobs.remove(doomed, min_age_s=min_age_s)

    # -- reading -----------------------------------------------------------------------------

    def resolve(self, ref: str | Ref) -> ModelVersion:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self._session() as s:
            row = self._resolve_row(s, ref)
            return self._to_version(row, self._aliases_of(s, row))

    def check(self) -> int:
        """Read the whole registry, so damage anywhere in it shows (RegistryDamagedError); the number of versions."""
        with self._session() as s:
            if self._engine.dialect.name == "sqlite":
                problems = [p for p in s.scalars(text("PRAGMA quick_check")) if p != "ok"]
                if problems:
                    raise RegistryDamagedError(_damaged_message(self.db_url, "; ".join(problems[:3])))
            s.scalars(select(ModelRow)).all()
            s.scalars(select(AliasRow)).all()
            return len(s.scalars(select(VersionRow)).all())

    def find_digest(self, name: str, digest: str) -> ModelVersion | None:
        """The first version of ``name`` whose artifact has this sha256, if any."""
        with self._session() as s:
            q = (select(VersionRow).join(ModelRow).where(ModelRow.name == name, VersionRow.digest == digest)
                 .order_by(VersionRow.version).limit(1))
            row = s.scalar(q)
            return self._to_version(row, self._aliases_of(s, row)) if row is not None else None

    def read_files(self, mv: ModelVersion) -> dict[str, bytes]:
        """The artifact's files, each checked against its recorded sha256."""
        return {
            fname: self.blobs.get(entry.sha256, label=f"artifact file {fname!r} of {mv.ref}")
            for fname, entry in mv.files.items()
        }

    def list_models(self) -> list[dict[str, Any]]:
        with self._session() as s:
            out = []
            for model in s.scalars(select(ModelRow).order_by(ModelRow.name)):
                versions = sorted(v.version for v in model.versions)
                latest = max(model.versions, key=lambda v: v.version) if model.versions else None
                out.append(
                    {
                        "name": model.name,
                        "versions": versions,
                        "latest": latest.version if latest else None,
                        "framework": latest.framework if latest else None,
                        "task": latest.task if latest else None,
                        "aliases": {a.alias: a.version for a in model.aliases},
                        "updated_at": _utc(latest.created_at).isoformat() if latest else None,
                    }
                )
            return out

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self._session() as s:
            model = self._model(s, name)
            rows = sorted(model.versions, key=lambda v: v.version)
            return [self._to_version(r, self._aliases_of(s, r)) for r in rows]

    # -- helpers -----------------------------------------------------------------------------

    def _model(self, s: Session, name: str) -> ModelRow:
        model = s.scalar(select(ModelRow).where(ModelRow.name == name))
        if model is None:
            raise NotFoundError(_no_model(name, s.scalars(select(ModelRow.name).order_by(ModelRow.name)).all()))
        return model

    def _resolve_row(self, s: Session, ref: Ref) -> VersionRow:
        model = self._model(s, ref.name)
        q = select(VersionRow).where(VersionRow.model_id == model.id)
        if ref.alias is not None:
            alias = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == ref.alias))
            if alias is None:
                names = ", ".join(sorted(a.alias for a in model.aliases)) or "none"
                raise NotFoundError(f"Model {ref.name!r} has no alias {ref.alias!r} (aliases: {names})")
            q = q.where(VersionRow.version == alias.version)
        elif ref.version is not None:
            q = q.where(VersionRow.version == ref.version)
        else:
            q = q.order_by(VersionRow.version.desc()).limit(1)
        row = s.scalar(q)
        if row is None:
            versions = ", ".join(str(v.version) for v in sorted(model.versions, key=lambda v: v.version))
            raise NotFoundError(f"Model {ref.name!r} has no version {ref.version} (versions: {versions})")
        return row

    @staticmethod
    def _aliases_of(s: Session, row: VersionRow) -> tuple[str, ...]:
        q = select(AliasRow.alias).where(AliasRow.model_id == row.model_id, AliasRow.version == row.version)
        return tuple(sorted(s.scalars(q)))

    @staticmethod
    def _to_version(row: VersionRow, aliases: tuple[str, ...]) -> ModelVersion:
        return ModelVersion(
            name=row.model.name,
            version=row.version,
            framework=row.framework,
            task=row.task,
            digest=row.digest,
            files={k: FileEntry(v["sha256"], v["size"]) for k, v in row.files.items()},
            signature=row.signature,
            metrics=row.metrics,
            tags=row.tags,
            libraries=row.libraries,
            extra=row.extra,
            description=row.description,
            created_at=_utc(row.created_at),
            aliases=aliases,
        )


ADOPTED_AT = "adopted_artifacts_at"  # when a new registry was started over existing artifact files

# SQLite result codes for a file that is not (or no longer) a valid database.
_SQLITE_DAMAGE = {11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}


def _raise_if_damaged(url: str, ctx: ExceptionContext) -> None:
    """Engine error hook: a corrupt SQLite registry is a message with a way out, on whatever call met it."""
    orig = ctx.original_exception
    if (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_DAMAGE:
        raise RegistryDamagedError(_damaged_message(url, str(orig))) from None


def _damaged_message(url: str, problem: str) -> str:
    return (f"The model registry {_safe_url(url)} is damaged ({problem}); the artifact files are not affected. "
            "Put back a backup copy of it, or run `modelport models new-registry` (moves the damaged file aside "
            "and starts an empty registry that keeps the artifact files), then import your exports "
            "(modelport models import FILE).")


def _no_model(name: str, known: Sequence[str]) -> str:
    """The message for a model name that is not in the store: a near miss (a typo) is named."""
    if close := difflib.get_close_matches(name, known, n=1):
        return f"No model {name!r} (did you mean {close[0]!r}?)"
    return f"No model named {name!r} in the store (models: {', '.join(known) or 'none yet'})"


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt  # SQLite drops the zone


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"
