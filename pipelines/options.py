"""Command-line flags derived from a stage's frozen config dataclass: one declaration per setting.

Each field of the config becomes `--field-name`; its type comes from the annotation, its help
text from the field's trailing comment (STYLE.md: every field has one, with its unit or range)
and its default from the dataclass. Flags that are not given stay out of the overrides, so a
preset or a `--config` file still decides them. Lists are comma-separated for every command.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize
import typing
from functools import cache
from pathlib import Path

import yaml


@cache
def field_comments(cls) -> dict[str, str]:
    """{field name: its trailing comment} read from the class source."""
    out, name = {}, None
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline)
    for tok in tokens:
        if tok.type == tokenize.NAME and tok.start[1] == 4 and name is None:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name is not None:
            out.setdefault(name, tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NEWLINE:
            name = None
    return {f.name: out.get(f.name, "") for f in dataclasses.fields(cls)}


def _parser_of(annotation) -> tuple[typing.Callable[[str], object], str]:
    """(text -> value, metavar) for a field's annotation; lists are comma-separated."""
    text = str(annotation)
    scalar = float if "float" in text else int if re.search(r"\bint\b", text) else str
    if text.startswith(("tuple", "list")) or "tuple[" in text or "list[" in text:
        return (lambda s: tuple(scalar(v) for v in s.split(",") if v != "")), f"{scalar.__name__.upper()},..."
    return scalar, scalar.__name__.upper()


def add_config_flags(parser: argparse.ArgumentParser, cls, *, skip=(), title: str | None = None) -> None:
    """A `--flag` per field of `cls` not in `skip`; parsed values land in `args.<field>` (None = not given)."""
    group = parser.add_argument_group(title or f"{cls.__name__} settings (the config's defaults unless given)")
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f"{comments[f.name]} (default: {_show(default)})"
        if hints[f.name] is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        parse, metavar = _parser_of(hints[f.name])
        group.add_argument(flag, dest=f.name, type=_named(parse, flag), default=None, metavar=metavar, help=help_text)


def given(args: argparse.Namespace, cls, *, skip=()) -> dict:
    """The fields of `cls` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def read_yaml_mapping(path: str, what: str) -> dict:
    """A YAML file that must hold a mapping of `what`'s fields."""
    d = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: must hold a mapping of {what} fields, found {type(d).__name__}")
    return d


def _named(parse, flag: str):
    def parse_flag(text: str):
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}={text!r}: not a valid value") from None
    parse_flag.__name__ = flag  # argparse names the type in its own error line
    return parse_flag


def _show(value) -> str:
    """The default as the flag would spell it; the field's comment says what an empty one means."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "empty"
    if value == "":
        return "empty"
    return "none" if value is None else str(value)
