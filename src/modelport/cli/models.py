"""``modelport models ...``: the registry from the command line.

The store (SQLAlchemy) is imported inside the commands: every other command starts without it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from modelport.cli.output import ago, console, err, print_json, table
from modelport.errors import ModelportError

if TYPE_CHECKING:
    from modelport.store import ModelStore


def _store() -> ModelStore:
    from modelport.api import get_store

    return get_store()

app = typer.Typer(help="List, inspect, tag, export and import registered models.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered models."""
    models = _store().list_models()
    if as_json:
        return print_json(models)
    if not models:
        console.print("No models yet. Train one: modelport train --data data.csv --target y --name NAME")
        return
    table(("NAME", "LATEST", "VERSIONS", "FRAMEWORK", "TASK", "ALIASES", "UPDATED"),
          ((m["name"], m["latest"], len(m["versions"]), m["framework"], m["task"],
            ",".join(f"{a}→{v}" for a, v in sorted(m["aliases"].items())) or "-", ago(m["updated_at"])) for m in models))


@app.command()
def show(ref: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show one version (NAME, NAME:3 or NAME@alias) and everything recorded about it."""
    mv = _store().resolve(ref)
    if as_json:
        return print_json(mv.to_dict())
    console.print(Text.assemble((mv.name, "bold"), f" version {mv.version}") + (f"  (aliases: {', '.join(mv.aliases)})" if mv.aliases else ""))
    rows = [("framework", mv.framework), ("task", mv.task), ("sha256", mv.digest),
            ("created", mv.created_at.isoformat() if mv.created_at else "-"), ("description", mv.description or "-")]
    for k, v in rows:
        console.print(f"  {k:<12} {v}")
    sig = mv.signature
    if sig.get("kind") == "tabular":
        console.print(f"  {'inputs':<12} {len(sig['features'])} features: {', '.join(sig['features'])}")
        if sig.get("classes") is not None:
            console.print(f"  {'classes':<12} {', '.join(map(str, sig['classes']))}")
    else:
        if "features" in sig:  # a tensor model shaped like a table: /predict takes its rows
            console.print(f"  {'/predict':<12} {len(sig['features'])} features: {', '.join(sig['features'])}")
        for t in sig.get("inputs", []):
            console.print(f"  {'input':<12} {t['name']} {t['dtype']} {t['shape']}")
        for t in sig.get("outputs", []):
            console.print(f"  {'output':<12} {t['name']} {t['dtype']} {t['shape']}")
    for label, data in (("metrics", mv.metrics), ("tags", mv.tags), ("libraries", mv.libraries)):
        if data:
            console.print(f"  {label:<12} " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items()))
    for fname, entry in mv.files.items():
        console.print(f"  {'file':<12} {fname} ({entry.size:,} bytes, sha256 {entry.sha256[:12]}…)")


@app.command()
def tag(ref: str, alias: str) -> None:
    """Point ALIAS (e.g. production) at a version: modelport models tag NAME:1 production."""
    mv = _store().set_alias(ref, alias)
    console.print(f"{mv.name}@{alias} → version {mv.version}")


@app.command()
def untag(name: str, alias: str) -> None:
    """Remove an alias from a model."""
    _store().remove_alias(name, alias)
    console.print(f"Removed {name}@{alias}")


@app.command()
def rm(ref: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting a whole model.")) -> None:
    """Delete a version (NAME:3) or, with every version, a whole model (NAME)."""
    from modelport.store import parse_ref

    r = parse_ref(ref)
    whole = r.version is None and r.alias is None
    if whole and not yes and not typer.confirm(f"Delete model {r.name!r} and all its versions?", default=False):
        raise ModelportError("Nothing deleted")
    removed = _store().delete(r)
    console.print(f"Deleted {', '.join(m.ref for m in removed)}")
    from modelport.serving.pinning import local_servers

    for m in removed:
        if pids := local_servers(m.ref):
            err.print(f"Warning: {m.ref} is being served by modelport serve (pid {', '.join(map(str, pids))}); "
                      "it keeps serving its own copy until it stops")


@app.command()
def gc(force: bool = typer.Option(False, "--force", help="Also delete files older than a registry started over them (models new-registry).")) -> None:
    """Remove artifact files no version refers to any more."""
    removed = _store().gc(force=force)
    console.print(f"Removed {len(removed)} unreferenced artifact file(s)")


@app.command("new-registry")
def new_registry_cmd() -> None:
    """After the registry was lost or damaged: start an empty one that keeps the artifact files.

    A damaged SQLite registry file is moved aside, not deleted. Then import your exports; `models gc`
    keeps the older files until --force."""
    from modelport.store.recovery import new_registry

    store, moved = new_registry()
    if moved is not None:
        console.print(f"Moved the damaged registry to {moved}")
    console.print(f"Started an empty registry; {store.blobs.count()} artifact file(s) kept. "
                  "Import your exports: modelport models import FILE")
    store.close()


@app.command("export")
def export_cmd(ref: str, file: Path) -> None:
    """Write a version to a bundle file (tar.gz) that `models import` reads."""
    from modelport.store.bundle import export_version

    mv = export_version(_store(), ref, file)
    console.print(f"Exported {mv.ref} to {file}")


@app.command("import")
def import_cmd(file: Path, name: str = typer.Option(None, help="Register under another name.")) -> None:
    """Register a version from a bundle written by `models export` (checked against its sha256s).

    Its files are written again, repairing damaged copies; a version already in the store with the
    same sha256 is not added twice."""
    from modelport.store.bundle import import_bundle

    result = import_bundle(_store(), file, name=name)
    for fname in result.repaired:
        console.print(f"Repaired artifact file {fname!r} (the stored copy was damaged)")
    if result.created:
        console.print(f"Imported as {result.version.ref}")
    else:
        console.print(f"Already in the store as {result.version.ref} (same sha256): no version added")
