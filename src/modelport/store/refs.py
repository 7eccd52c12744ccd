"""Model references: ``name`` (latest), ``name:3`` (a version), ``name@production`` (an alias)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.errors import InvalidReferenceError

# Names end up in image tags, container labels and URLs: keep them to what all of those accept.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,62}$")
# ASCII digits only: str.isdigit() also accepts '²' (int() then fails) and '٣' or '３' (int() reads them as 3).
_VERSION = re.compile(r"^[0-9]{1,9}$")


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidReferenceError(
            f"Invalid model name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or alias == "latest":
        raise InvalidReferenceError(
            f"Invalid alias {alias!r}: use a word starting with a letter "
            "(letters, digits, '.', '_', '-'); 'latest' is reserved"
        )
    return alias


def parse_ref(text: str) -> Ref:
    text = text.strip()
    if "@" in text:
        name, _, alias = text.partition("@")
        if alias == "latest":
            return Ref(check_name(name))
        return Ref(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, _, version = text.partition(":")
        if version == "latest":
            return Ref(check_name(name))
        if not _VERSION.fullmatch(version) or int(version) < 1:
            raise InvalidReferenceError(
                f"Invalid version in {text!r}: expected a number like {name}:3, or an alias like {name}@production"
            )
        return Ref(check_name(name), version=int(version))
    return Ref(check_name(text))
