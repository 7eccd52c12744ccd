"""``modelport build | run | ps | logs | stop | start | restart | rm | exec | deploy | rollback | doctor``."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport.cli.output import console

BASE_IMAGE_HELP = "Base image with Python 3.11 (the Dockerfile's FROM)."


def _progress(line: str) -> None:
    console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def build(
    ref: str = typer.Argument(..., help="Model to build: NAME, NAME:3 or NAME@alias."),
    tag: str = typer.Option(None, "--tag", "-t", help="Image tag (default modelport/NAME:VERSION)."),
    base_image: str = typer.Option("python:3.11-slim", "--base-image", help=BASE_IMAGE_HELP),
    requirements: Path = typer.Option(None, "--requirements", help="Extra pip requirements for the image, one per line."),
    context_only: Path = typer.Option(None, "--context-only", help="Write the build context to this directory and stop."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build every layer again."),
) -> None:
    """Build a lean, offline-reproducible image serving a model."""
    from modelport.container.build import build_image, write_build_context

    if context_only:
        write_build_context(ref, context_only, base_image=base_image, requirements=requirements, progress=_progress)
        console.print(f"[green]Build context written to {context_only}[/]  (docker build -t IMAGE {context_only})")
        return
    image = build_image(ref, tag=tag, base_image=base_image, requirements=requirements, nocache=no_cache, progress=_progress)
    console.print(f"[green]Built {image.tag}[/] ({image.size / 1e6:.0f} MB, {image.seconds:.1f}s) serving {image.model.ref}")


def register(app: typer.Typer) -> None:
    app.command()(build)
