"""The registry's tables. Any SQLAlchemy database works; SQLite is the default."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "mp_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    versions: Mapped[list[VersionRow]] = relationship(back_populates="model", cascade="all, delete-orphan")
    aliases: Mapped[list[AliasRow]] = relationship(back_populates="model", cascade="all, delete-orphan")


class VersionRow(Base):
    __tablename__ = "mp_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("mp_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    framework: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    tags: Mapped[dict] = mapped_column(JSON)
    libraries: Mapped[dict] = mapped_column(JSON)
    extra: Mapped[dict] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[ModelRow] = relationship(back_populates="versions")


class AliasRow(Base):
    __tablename__ = "mp_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("mp_models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    model: Mapped[ModelRow] = relationship(back_populates="aliases")


class MetaRow(Base):
    """Facts about the registry itself (e.g. ``adopted_artifacts_at``)."""

    __tablename__ = "mp_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Writers wait for each other (timeout) and take the write lock up front (BEGIN IMMEDIATE,
        # only on engines marked ``immediate``), so two processes numbering versions at once
        # serialise instead of failing; readers never take it.
        engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None})
        read_only = "mode=ro" in url

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            if not read_only:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create the tables that are missing, safely when several processes open a new database at once.

    A plain ``create_all`` reads the catalogue in a deferred transaction and then writes; on SQLite
    in WAL mode a writer that committed in between makes that upgrade fail at once with "database
    is locked" (the busy timeout does not apply). So: look first without locking, and create under
    the write lock taken up front (BEGIN IMMEDIATE on SQLite). Another server creating the same
    table at the same moment (PostgreSQL) is fine as long as the tables exist afterwards."""
    wanted = set(metadata.tables)
    if wanted <= set(inspect(engine).get_table_names()):
        return
    try:
        with engine.execution_options(immediate=True).begin() as conn:
            metadata.create_all(conn)
    except DBAPIError:
        if not wanted <= set(inspect(engine).get_table_names()):
            raise
