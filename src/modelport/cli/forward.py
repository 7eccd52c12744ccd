"""Run the command being run in a stack's control service, where the predictions database is reachable.

The argv is rebuilt from the command's context (Typer's, Click's vendored; a command gets it by
declaring a ``ctx: typer.Context`` parameter), so an option added to a forwarded command is
forwarded with no more code. Host-only options stay here: ``--dir`` (which stack), ``--db-url`` (the host
has none; the gateway has its own) and ``--output`` (the gateway writes to standard output, the
host into the file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import IO, Any

import typer

HOST_ONLY = frozenset({"directory", "db_url", "output"})  # parameter names, as the commands declare them
TO_STDOUT = "-"


def forwarded_argv(ctx: typer.Context) -> list[str]:
    """``ctx``'s command path (without the program) and the parameters the user gave, host-only ones
    left out; ``--output -`` when the command writes a file (the host keeps the file).

    Parameters left at their default are not passed: the control service's modelport applies its own."""
    options: list[str] = []
    arguments: list[str] = []
    for param in ctx.command.params:
        if param.name is None or param.name in HOST_ONLY:
            continue
        if _defaulted(ctx, param.name):
            continue
        words = _as_argv(param, ctx.params.get(param.name))
        (arguments if _is_argument(param) else options).extend(words)
    if "output" in ctx.params:
        options += ["--output", TO_STDOUT]
    if any(a.startswith("-") for a in arguments):  # a value like "-x" must not be read as an option
        arguments.insert(0, "--")
    return [*_command_path(ctx), *options, *arguments]


def _defaulted(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is None or source.name == "DEFAULT"  # by name: the enum's module is Typer's private one


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def _command_path(ctx: typer.Context) -> list[str]:
    """The subcommand names from the root down (the root's own name is the program's, not forwarded)."""
    names: list[str] = []
    while ctx.parent is not None:
        names.insert(0, ctx.command.name or ctx.info_name or "")
        ctx = ctx.parent
    return names


def _as_argv(param: Any, value: Any) -> list[str]:
    """``value`` as the command line that parses back to it (``param``: a Typer parameter, whose
    classes Typer does not export)."""
    if value is None:
        return []
    if _is_argument(param):
        return [_text(v) for v in value] if param.nargs != 1 else [_text(value)]
    if param.is_bool_flag:
        if value:
            return [_long(param.opts)]
        return [_long(param.secondary_opts)] if param.secondary_opts else []
    argv: list[str] = []
    for item in value if param.multiple else [value]:  # a repeatable option: once per value
        argv += [_long(param.opts), *([_text(v) for v in item] if param.nargs != 1 else [_text(item)])]
    return argv


def _long(opts: list[str]) -> str:
    """``--json`` rather than ``-j``: the forwarded argv reads like the command's documentation."""
    return next((o for o in opts if o.startswith("--")), opts[0])


def _text(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def run_in_control(ctx: typer.Context) -> None:
    """Run the command of ``ctx`` in the control service of the stack its ``--dir`` names; standard
    output into its ``--output`` file when it has one. Exits with the command's status when that is not 0."""
    from modelport.deploy.stack import Stack, exec_in_control

    stack = Stack.load(ctx.params.get("directory") or Path("."))
    argv = forwarded_argv(ctx)
    output = ctx.params.get("output")
    if output is None or str(output) == TO_STDOUT:
        status = exec_in_control(stack, argv)
    else:
        status = _into_file(Path(output), lambda f: exec_in_control(stack, argv, stdout=f))
    if status:
        raise typer.Exit(status)


def _into_file(path: Path, write: Callable[[IO[bytes]], int]) -> int:
    """``write(f)``'s status; ``path`` replaced only when it succeeded (a failed export leaves no half file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            status = write(f)
        if status == 0:
            tmp.replace(path)
        return status
    finally:
        tmp.unlink(missing_ok=True)
