"""Command-line flags generated from the config dataclasses: one declaration per setting.

Each field of a config dataclass is declared with :func:`setting`, which records its help
and, where it has them, its choices, metavar, type conversion and ``nargs`` in the field's
metadata; ``flag=False`` marks a field that is no flag (a resolved value such as α or h).
:func:`add_settings` adds a dataclass's flags to an argparse parser, and
:func:`given_settings` reads back the ones given::

    @dataclass
    class Config:
        sampler: str = setting("local", help="where episodes run", choices=("local", "ray"))
        hidden: list[int] = setting([100, 100], help="layer sizes", type=layer_sizes)
        alpha: float | None = setting(None, flag=False, help="resolved adaptation step")

    parser = argparse.ArgumentParser()
    add_settings(parser, Config)               # --sampler {local,ray}, --hidden HIDDEN
    args = parser.parse_args(["--hidden", "8,8"])
    given_settings(args, Config)               # {"hidden": [8, 8]}: only what was given

The flags default to ``argparse.SUPPRESS``, so the namespace holds only the settings given
on the command line; the defaults live in the dataclass alone (and show in ``--help``).
Choices show in ``--help`` as ``{a,b}``; :func:`check_choices` refuses a value that is not
one in one line (``unknown NAME 'value'; valid choices: a, b``), for a command line and a
config.json alike. Settings whose valid values depend on a registry (task families,
methods) say so in their help and keep their own validation.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import cache, partial
from typing import Any

KEY = "rkmeta_rl.setting"  # the field metadata key holding its Setting


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one config field appears on the command line (:func:`setting`)."""

    help: str
    flag: bool = True
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    exclusive: str | None = None  # flags sharing this name are mutually exclusive


def setting(default: Any, *, help: str, flag: bool = True,
            choices: Iterable[str] | None = None, metavar: str | None = None,
            type: Callable[[str], Any] | None = None, nargs: str | None = None,
            exclusive: str | None = None) -> Any:
    """A dataclass field with its command-line declaration. A mutable default (a list)
    is copied for each instance; ``choices`` may be a mapping (its keys are the choices)."""
    spec = Setting(help=help, flag=flag, choices=None if choices is None else tuple(choices),
                   metavar=metavar, type=type, nargs=nargs, exclusive=exclusive)
    metadata = {KEY: spec}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=partial(copy.deepcopy, default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    """``meta_iters`` -> ``--meta-iters``."""
    return "--" + name.replace("_", "-")


def spec_of(field: dataclasses.Field) -> Setting:
    """The field's declaration; every field of a config dataclass must have one."""
    spec = field.metadata.get(KEY)
    if spec is None:
        raise TypeError(f"config field {field.name!r} is declared without setting(...): "
                        "give its help (and flag=False if it is no flag)")
    return spec


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if spec_of(f).flag]


def field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                 skip: Collection[str] = (), helps: Mapping[str, str] | None = None) -> None:
    """Add a flag for every flag field of dataclass ``cls`` but those in ``skip``;
    ``helps`` replaces some fields' help (a command that reads a setting differently)."""
    hints = _type_hints(cls)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for field in flag_fields(cls):
        if field.name in skip:
            continue
        spec = spec_of(field)
        target = parser
        if spec.exclusive is not None:
            if spec.exclusive not in groups:
                groups[spec.exclusive] = parser.add_mutually_exclusive_group()
            target = groups[spec.exclusive]
        text = (helps or {}).get(field.name, spec.help)
        target.add_argument(flag_name(field.name), default=argparse.SUPPRESS,
                            help=_help(text, field_default(field)),
                            **_conversion(cls, field, spec, hints[field.name]))


def _help(text: str, default: Any) -> str:
    """The help, with the dataclass default where there is one (escaped for argparse)."""
    if default is not None and default is not False:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")


def _conversion(cls: type, field: dataclasses.Field, spec: Setting, hint: Any
                ) -> dict[str, Any]:
    """argparse's action, type, metavar and nargs for one field."""
    base = _without_none(hint)
    if base is bool:
        if field.default is not False:
            raise TypeError(f"{cls.__name__}.{field.name}: a bool flag must default to False")
        return {"action": "store_true"}
    convert = spec.type
    if convert is None:
        if base not in (int, float, str):
            raise TypeError(f"{cls.__name__}.{field.name}: give setting(..., type=...) to "
                            f"read a {hint} from the command line")
        convert = base
    metavar = spec.metavar
    if metavar is None and spec.choices is not None:
        metavar = "{" + ",".join(spec.choices) + "}"
    kwargs: dict[str, Any] = {"type": convert, "metavar": metavar}
    if spec.nargs is not None:
        kwargs["nargs"] = spec.nargs
    return kwargs


def _without_none(hint: Any) -> Any:
    """``int | None`` -> ``int``; other hints as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def given_settings(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` given on the command line (its flags default to SUPPRESS,
    so the namespace holds only those given)."""
    names = {f.name for f in flag_fields(cls)}
    return {name: value for name, value in vars(args).items() if name in names}


def check_choices(cfg: Any) -> None:
    """Refuse a setting that is not one of its declared choices (ValueError naming the
    value and the valid ones); ``None`` passes where it is the field's default."""
    for field in dataclasses.fields(cfg):
        choices = spec_of(field).choices
        value = getattr(cfg, field.name)
        if choices is None or (value is None and field.default is None):
            continue
        if value not in choices:
            raise ValueError(f"unknown {field.name} {value!r}; valid choices: "
                             f"{', '.join(choices)}")


def layer_sizes(text: str) -> list[int]:
    """'100,100' -> [100, 100] (the type conversion of --hidden)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"must be positive layer sizes like 100,100, got {text!r}")
    return sizes
