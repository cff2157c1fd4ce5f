"""Command-line options generated from a frozen config dataclass: each config declared once.

A config dataclass documents each field with the string right below it (an attribute
docstring) or ``field(metadata={"help": ...})``; ``ConfigOptions`` turns its fields into
argparse options: the doc becomes the help, the field's default the shown default, the
annotation the type (``int``, ``float``, ``str``, ``bool`` -> ``--x/--no-x``, ``X | None``
-> also takes ``none``, ``tuple[X, ...]`` -> several values, ``dict[str, X]`` -> a repeatable
``NAME=VALUE``, ``Literal[...]`` or ``metadata["choices"]`` -> choices). ``encore`` builds
the config right after parsing (``rl.cli.main``), so a value the config refuses is a usage
error naming the option, before any work starts. Like CleanRL's ``Args`` with tyro, without
the dependency.

    options = ConfigOptions(parser, TrainConfig, flags={"train_batch_size": "--batch-size"})
    ...
    config = options.build(args)   # TrainConfig, or UsageError("--lr must be > 0, got -1")
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rl.cli.errors import UsageError

_MISSING = dataclasses.MISSING


def field_docs(config_cls: type) -> dict[str, str]:
    """Each field's documentation: ``metadata["help"]``, else the string literal right below
    the field in the class body (read from the source), whitespace collapsed."""
    docs: dict[str, str] = {}
    try:
        source = textwrap.dedent(inspect.getsource(config_cls))
        body = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        body = None
    if isinstance(body, ast.ClassDef):
        statements = body.body
        for statement, following in zip(statements, statements[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                text = " ".join(following.value.value.split())
                docs[statement.target.id] = text.replace("``", "`")
    for f in dataclasses.fields(config_cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return docs


def _field_types(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # a forward reference only imported for type checking
        hints = {}
        module = inspect.getmodule(config_cls)
        namespace = dict(vars(module)) if module else {}
        for f in dataclasses.fields(config_cls):
            try:
                hints[f.name] = (
                    eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
                )
            except Exception:
                hints[f.name] = Any
        return hints


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _optional_of(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _scalar(kind: Any, optional: bool, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError:
            name = getattr(kind, "__name__", str(kind))
            raise argparse.ArgumentTypeError(f"{flag} takes a {name}, got {text!r}") from None

    return convert


def _pair(kind: Any, flag: str) -> Callable[[str], tuple[str, Any]]:
    def convert(text: str) -> tuple[str, Any]:
        name, sep, value = text.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            return name.strip(), kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes NAME=VALUE, got {text!r}") from None

    return convert


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value) or "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One generated option: the config field it sets and its flags."""

    field: str
    flags: tuple[str, ...]
    dest: str


class ConfigOptions:
    """The options of one config dataclass on one parser, and the config built from them.

    ``flags``: field -> flag(s) where the option's name is not the field's (the first is
    shown; the others keep old spellings working). ``only`` / ``skip``: the fields exposed
    (``skip`` maps each left-out field to why, so the coverage test can tell a deliberate
    gap from a forgotten one). ``defaults``: this command's defaults where they differ from
    the config's. ``choices``: field -> allowed values where the annotation is a plain str.
    ``prefix``: prepended to generated flags and dests (``--ppo-lr`` sets ``lr``).
    ``fixed``: values or ``args -> value`` callables for the fields that are not options.
    ``attr``: the namespace attribute that receives the built config in ``rl.cli.main``.
    """

    def __init__(
        self,
        parser: argparse.ArgumentParser | argparse._ArgumentGroup,
        config_cls: type,
        *,
        attr: str,
        flags: Mapping[str, str | tuple[str, ...]] | None = None,
        only: Iterable[str] | None = None,
        skip: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        choices: Mapping[str, Iterable[Any]] | None = None,
        helps: Mapping[str, str] | None = None,
        prefix: str = "",
        fixed: Mapping[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        self.config_cls = config_cls
        self.attr = attr
        self.prefix = prefix
        self.skipped = dict(skip or {})
        self.fixed = dict(fixed or {})
        self.options: list[ConfigOption] = []
        flags, defaults = dict(flags or {}), dict(defaults or {})
        choices, helps = dict(choices or {}), dict(helps or {})
        all_fields = {f.name: f for f in dataclasses.fields(config_cls)}
        unknown = (set(flags) | set(defaults) | set(choices) | set(helps) | set(self.skipped)
                   | set(self.fixed) | set(only or ())) - set(all_fields)  # fmt: skip
        if unknown:
            raise TypeError(f"{config_cls.__name__} has no fields {sorted(unknown)}")
        wanted = list(only) if only is not None else list(all_fields)
        if only is not None:  # fields left out by `only` are deliberate
            for name in all_fields:
                if name not in wanted:
                    self.skipped.setdefault(name, f"not an option of this command ({title or ''})")
        docs, hints = field_docs(config_cls), _field_types(config_cls)
        target = parser
        if title and isinstance(parser, argparse.ArgumentParser):
            target = parser.add_argument_group(title)
        for name in wanted:
            if name in self.skipped or name in self.fixed:
                continue
            f = all_fields[name]
            default = defaults.get(name, _default(f))
            given = flags.get(name) or f"--{prefix}{name.rstrip('_').replace('_', '-')}"
            option_flags = (given,) if isinstance(given, str) else tuple(given)
            dest = f"{prefix.replace('-', '_')}{name}"
            help_text = helps.get(name, docs.get(name, ""))
            allowed = choices.get(name, f.metadata.get("choices"))
            self._add(target, option_flags, dest, hints.get(name, Any), default, help_text, allowed)
            self.options.append(ConfigOption(name, option_flags, dest))

    @staticmethod
    def _add(target, option_flags, dest, annotation, default, help_text, allowed) -> None:
        flag = option_flags[0]
        kind, optional = _optional_of(annotation)
        origin, type_args = typing.get_origin(kind), typing.get_args(kind)
        kwargs: dict[str, Any] = {"dest": dest}
        if origin is typing.Literal:
            allowed, kind = type_args, type(type_args[0])
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            item = type_args[0] if type_args else str
            kwargs["type"] = _scalar(item, False, flag)
            kwargs["nargs"] = "+" if (len(type_args) == 2 and type_args[1] is Ellipsis) or origin is list else len(type_args)  # fmt: skip
            kwargs["metavar"] = getattr(item, "__name__", "X").upper()
        elif origin is dict:
            kwargs["type"] = _pair(type_args[1] if type_args else str, flag)
            kwargs["action"] = "append"
            kwargs["metavar"] = "NAME=VALUE"
        elif kind in (int, float, str):
            kwargs["type"] = _scalar(kind, optional, flag)
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        else:
            raise TypeError(f"{flag}: no option type for {annotation!r}")
        if allowed is not None:
            kwargs["choices"] = tuple(allowed)
        # The config's default: argparse keeps it unparsed; an appended dict starts empty.
        kwargs["default"] = None if origin is dict else default
        shown = f"(default: {_shown(default)})"
        kwargs["help"] = (f"{help_text} {shown}" if help_text else shown).replace("%", "%%")
        target.add_argument(*option_flags, **kwargs)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The config's keyword arguments from the parsed options and ``fixed``."""
        values: dict[str, Any] = {}
        for option in self.options:
            value = getattr(args, option.dest)
            if isinstance(value, list):
                if value and isinstance(value[0], tuple):  # appended NAME=VALUE pairs
                    value = dict(value)
                else:
                    value = tuple(value)
            if value is None and option.field in _dict_fields(self.config_cls):
                continue  # no NAME=VALUE given: the config's default
            values[option.field] = value
        for name, value in self.fixed.items():
            values[name] = value(args) if callable(value) else value
        return values

    def build(self, args: argparse.Namespace, **overrides: Any) -> Any:
        """The config, or ``UsageError`` naming the option whose value it refused."""
        try:
            return self.config_cls(**(self.values(args) | overrides))
        except ValueError as exc:
            raise UsageError(self.in_option_names(str(exc))) from None

    def in_option_names(self, message: str) -> str:
        """A config's error message with its field names replaced by the option flags."""
        for option in sorted(self.options, key=lambda o: -len(o.field)):
            pattern = rf"\b{re.escape(option.field)}\b"
            if "_" not in option.field and len(option.field) < 3:
                pattern += r"(?= must)"
            message = re.sub(pattern, option.flags[0], message)
        return message


def _dict_fields(config_cls: type) -> set[str]:
    hints = _field_types(config_cls)
    return {name for name, kind in hints.items() if typing.get_origin(kind) is dict}


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose config options are added only when it is used.

    Importing a config's module can pull in torch, Ray or pandas (seconds); ``encore --help``
    and the other commands never need them. ``defer(add)`` runs ``add(self)`` the first
    time this parser parses or prints its help.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add)

    def populate(self) -> CommandParser:
        while self._deferred:
            self._deferred.pop(0)(self)
        return self

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self.populate()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.populate()
        return super().format_help()

    def format_usage(self) -> str:
        self.populate()
        return super().format_usage()


def config_options(
    parser: argparse.ArgumentParser,
    config: str,
    *,
    attr: str,
    title: str | None = None,
    **kwargs: Any,
) -> None:
    """Options for the config class ``"package.module:Class"``, built into ``args.<attr>``
    after parsing; added when the command is used (see ``CommandParser``)."""

    def add(target: argparse.ArgumentParser) -> None:
        module_name, _, class_name = config.partition(":")
        config_cls = getattr(importlib.import_module(module_name), class_name)
        module = importlib.import_module(module_name)
        resolved = {
            key: value() if key in ("choices", "defaults") and callable(value) else value
            for key, value in kwargs.items()
        }
        # choices={"algo": "ALGORITHMS"}: a constant of the config's module, by name.
        resolved["choices"] = {
            name: getattr(module, allowed) if isinstance(allowed, str) else allowed
            for name, allowed in (resolved.get("choices") or {}).items()
        }
        attach(target, ConfigOptions(target, config_cls, attr=attr, title=title, **resolved))

    if isinstance(parser, CommandParser):
        parser.defer(add)
    else:
        add(parser)


def attach(parser: argparse.ArgumentParser, *options: ConfigOptions) -> None:
    """Have ``rl.cli.main`` build these configs into ``args.<attr>`` right after parsing."""
    existing = parser.get_default("config_options") or ()
    parser.set_defaults(config_options=(*existing, *options))


def build_configs(args: argparse.Namespace) -> None:
    """Build every attached config into the namespace (``UsageError`` on a refused value)."""
    for options in getattr(args, "config_options", None) or ():
        setattr(args, options.attr, options.build(args))
