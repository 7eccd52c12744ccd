"""``modelport keygen | sign | verify | save | load``: who built an image, and moving it without network."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport.cli.output import LoggedProgress, console, success

IMAGE_HELP = "A built model (NAME:VERSION, NAME@alias) or a modelport image tag."


def keygen(
    private_key: Path = typer.Argument(Path("modelport-signing.pem"), help="Where to write the private key (PEM)."),
    public_key: Path = typer.Option(None, "--public", help="Where to write the public key (default: PRIVATE_KEY with .pub.pem)."),
) -> None:
    """Make an Ed25519 key pair for signing images: keep the private key, give the public one to whoever runs them."""
    from modelport.api import generate_signing_key, public_key_path

    key_id = generate_signing_key(private_key, public_key)
    success(f"Key {key_id}", f": private {private_key} (yours alone), public {public_key or public_key_path(private_key)}")
    console.print(f"  Sign every build: export MODELPORT_SIGNING_KEY={private_key}; refuse unsigned images: "
                  f"export MODELPORT_VERIFY_KEY={public_key or public_key_path(private_key)}")


def sign(
    target: str = typer.Argument(..., help=IMAGE_HELP),
    key: Path = typer.Option(..., "--key", envvar="MODELPORT_SIGNING_KEY", help="The Ed25519 private key (PEM)."),
) -> None:
    """Sign a built image's statement (its image ID, SBOM sha256 and model) with your key."""
    from modelport.api import sign_image

    key_id = sign_image(target, key)
    success(f"Signed {target}", f" with key {key_id}")


def verify(
    target: str = typer.Argument(..., help=IMAGE_HELP),
    key: Path = typer.Option(None, "--key", help="The public key (PEM) it must be signed with (default: MODELPORT_VERIFY_KEY; "
                             "without one, only the image ID and SBOM checksums are checked)."),
) -> None:
    """Check that an image is the one its statement names, its SBOM unchanged, and (with a key) signed with it."""
    from modelport.api import verify_image

    v = verify_image(target, key)
    success(f"Verified {v.image}", f": image {v.statement['image_id'][:19]}…, SBOM sha256 {v.statement['sbom_sha256'][:12]}…, "
            f"model {v.statement['model']}:{v.statement['version']}"
            + (f", signed with key {v.key_id}" if v.key_id else " (checksums only: no public key given)"))


def save(
    target: str = typer.Argument(..., help=IMAGE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="The archive to write (a tar file)."),
) -> None:
    """Write a built image with its SBOM, statement and signature to one file, for a machine without network."""
    from modelport.api import save_image

    with LoggedProgress("save") as log:
        saved = save_image(target, output, progress=log)
    success(f"Saved {saved.image}", f" to {saved.path} ({saved.size / 1e6:.0f} MB, "
            f"{'signed' if saved.signed else 'not signed'}), sha256 {saved.sha256}")
    console.print(f"  On the other machine: modelport load {saved.path.name}")


def load(
    archive: Path = typer.Argument(..., help="An archive from `modelport save`."),
    key: Path = typer.Option(None, "--verify-key", help="Refuse it unless signed with this public key (PEM; default: MODELPORT_VERIFY_KEY)."),
) -> None:
    """Check an archive's checksums (and signature), load its image into the Docker Engine, keep its SBOM and signature."""
    from modelport.api import load_image

    with LoggedProgress("load") as log:
        loaded = load_image(archive, key, progress=log)
    success(f"Loaded {loaded.image}", f" serving {loaded.model}:{loaded.version}"
            + (f", signed with key {loaded.key_id}" if loaded.key_id else ", checksums verified"))
    console.print(f"  modelport run {loaded.image}")


def register(app: typer.Typer) -> None:
    for command in (keygen, sign, verify, save, load):
        app.command()(command)
