"""Options generated from config dataclasses: every field has an option (or a stated reason
not to), every generated option sets a field, and no options give the config's defaults."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from rl.cli import build_parser
from rl.cli.config_options import CommandParser, ConfigOptions, build_configs, field_docs
from rl.cli.errors import UsageError


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, with its deferred config options added."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        if isinstance(parser, CommandParser):
            parser.populate()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    found[f"{name} {sub_name}".strip()] = sub
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "")
    return found


def _attached() -> list[tuple[str, argparse.ArgumentParser, ConfigOptions]]:
    return [
        (name, parser, options)
        for name, parser in _commands().items()
        for options in parser.get_default("config_options") or ()
    ]


def test_the_configs_the_cli_repeated_are_generated():
    generated = {(name, options.config_cls.__name__) for name, _, options in _attached()}
    for expected in [
        ("train", "TrainConfig"),
        ("train", "ObservationLayout"),
        ("compare-policies", "CompareSettings"),
        ("compare-policies", "TrainConfig"),
        ("ab-test", "ABTestConfig"),
        ("ab-test", "TrainConfig"),
        ("ab-test", "LongTermRewardConfig"),
        ("data-efficiency", "ABTestConfig"),
        ("offline-steps", "LongTermRewardConfig"),
        ("offline-steps", "ObservationLayout"),
        ("simulate", "ObservationLayout"),
        ("simulate", "SimulatorConfig"),
        ("train-embedding", "VAEConfig"),
        ("cluster proof", "ProofConfig"),
    ]:
        assert expected in generated, expected


def test_every_field_has_an_option_and_every_option_a_field():
    for name, parser, options in _attached():
        fields = {f.name for f in dataclasses.fields(options.config_cls)}
        covered = {o.field for o in options.options} | set(options.skipped) | set(options.fixed)
        assert covered == fields, (name, options.config_cls.__name__, fields ^ covered)
        for option in options.options:
            assert option.field in fields, (name, option)
            for flag in option.flags:
                action = parser._option_string_actions.get(flag)
                assert action is not None and action.dest == option.dest, (name, flag)
        for field_name, reason in options.skipped.items():
            assert reason.strip(), (name, field_name)  # a left-out field says why


def test_no_options_give_the_configs_defaults():
    """The CLI's defaults are the config's (or the command's declared ones): no drift."""
    for name, parser, options in _attached():
        if name in ("evaluate",):
            continue
        required = []  # e.g. promote's VERSION, tune's --log: any value parses
        for action in parser._actions:
            if action.required:
                required += [*action.option_strings[:1], "x"]
        args = parser.parse_args(required)
        built = options.build(args)
        default = options.config_cls()
        for option in options.options:
            declared = parser.get_default(option.dest)
            expected = getattr(default, option.field)
            if isinstance(expected, dict) or declared is None:
                continue
            if declared != expected and not isinstance(expected, tuple):
                # a command default that differs from the config (e.g. --ppo-iterations 10)
                assert getattr(built, option.field) == declared, (name, option.field)
            else:
                assert getattr(built, option.field) == expected, (name, option.field)


def test_help_shows_each_fields_doc_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "GAE lambda in [0, 1]" in out and "(default: 0.95)" in out
    assert "--batch-size BATCH_SIZE, --train-batch-size BATCH_SIZE" in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ab-test", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    # The minimum a value must meet is in the help, not only in the error.
    assert "Bootstrap resamples for intervals of medians and lifts. >= 50. (default: 500)" in out


def test_old_option_spellings_still_work():
    args = build_parser().parse_args(
        ["train", "--hidden-sizes", "8", "8", "--train-batch-size", "64", "--lambda", "0.5"]
    )
    build_configs(args)
    assert args.train_config.hidden_sizes == (8, 8)
    assert args.train_config.train_batch_size == 64 and args.train_config.lambda_ == 0.5


@dataclasses.dataclass(frozen=True)
class _Example:
    rate: float = 0.5
    """Share of things, in (0, 1)."""
    widths: tuple[int, ...] = (4, 2)
    """Layer widths."""
    clip: float | None = 1.0
    """A clip, or None."""
    on: bool = True
    """Switch."""
    mode: Literal["a", "b"] = "a"
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    name: str = dataclasses.field(default="x", metadata={"help": "from metadata"})

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")


def test_generated_option_kinds_and_errors_name_the_option():
    assert field_docs(_Example)["rate"] == "Share of things, in (0, 1)."
    assert field_docs(_Example)["name"] == "from metadata"
    parser = argparse.ArgumentParser()
    options = ConfigOptions(parser, _Example, attr="example")
    args = parser.parse_args(
        ["--widths", "8", "8", "8", "--clip", "none", "--no-on", "--mode", "b",
         "--extra", "g=1.5", "--extra", "h=2"]
    )  # fmt: skip
    assert options.build(args) == _Example(
        widths=(8, 8, 8), clip=None, on=False, mode="b", extra={"g": 1.5, "h": 2.0}
    )
    assert options.build(parser.parse_args([])) == _Example()
    with pytest.raises(UsageError, match=r"^--rate must be in \(0, 1\), got 2.0$"):
        options.build(parser.parse_args(["--rate", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    with pytest.raises(TypeError, match="no fields"):
        ConfigOptions(argparse.ArgumentParser(), _Example, attr="x", flags={"nope": "--nope"})
