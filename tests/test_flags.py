"""The settings' flags are generated from the config dataclasses (rkmeta_rl.run.flags): every
enumerated flag lists its choices in --help and refuses another value in one line (exit 2),
every setting that is a flag appears exactly once in its command's parser, and the
namespace holds only the flags given (a preset yields to them without a second parse).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from envs.locomotion_dynamics import DYNAMICS
from rkmeta_rl.cli import build_parser, main
from rkmeta_rl.methods import METHOD_NAMES
from rkmeta_rl.rl import cli as rl_cli
from rkmeta_rl.rl.config import PRESETS, TrainConfig, resolve
from rkmeta_rl.rl.evaluate import INITS, PROTOCOLS, EvalConfig
from rkmeta_rl.rl.sampler import SAMPLERS
from rkmeta_rl.rl.tasks import FAMILIES
from rkmeta_rl.run.flags import (
    add_settings,
    check_choices,
    flag_fields,
    flag_name,
    given_settings,
    layer_sizes,
    setting,
    spec_of,
)
from rkmeta_rl.supervised import cli as supervised_cli
from rkmeta_rl.supervised.config import BENCHMARKS, SupervisedConfig

# (command, the dataclass its settings' flags come from, the settings it has no flag for,
#  the flags written by hand: no setting of the dataclass)
COMMANDS = {
    "train": (TrainConfig, (), ("--tableau", "--out", "--resume", "--no-progress")),
    "train-oracle": (TrainConfig, rl_cli.ORACLE_FIXED, ("--out", "--resume", "--no-progress")),
    "evaluate": (EvalConfig, (), ("--out", "--num-threads", "--no-progress")),
    "supervised": (SupervisedConfig, (),
                   ("--tableau", "--out", "--resume", "--no-progress")),
}

# Every flag with a fixed set of values, and those whose values come from a registry (they
# keep their own validation; --help still names what is valid).
FIXED = [
    ("train", "--dynamics", DYNAMICS), ("train", "--sampler", tuple(SAMPLERS)),
    ("train", "--preset", tuple(PRESETS)),
    ("train-oracle", "--dynamics", DYNAMICS), ("train-oracle", "--sampler", tuple(SAMPLERS)),
    ("train-oracle", "--preset", tuple(PRESETS)),
    ("evaluate", "--protocol", tuple(PROTOCOLS)), ("evaluate", "--init", tuple(INITS)),
    ("supervised", "--benchmark", BENCHMARKS),
]
REGISTRY = [
    ("train", "--env", tuple(FAMILIES)), ("train-oracle", "--env", tuple(FAMILIES)),
    ("train", "--method", METHOD_NAMES), ("supervised", "--method", METHOD_NAMES),
    ("evaluate", "--checkpoint", ("last", "best")),
]
ENUMERATED = FIXED + REGISTRY


def subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def help_of(command: str, monkeypatch, capsys) -> str:
    """``rkmeta-rl COMMAND --help``, one flag per line (no wrapping)."""
    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def entry(help_text: str, flag: str) -> str:
    """The entry of ``flag`` in an unwrapped --help: its line, and its help's line where
    argparse puts that below a long flag."""
    lines = help_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(flag + " ")]
    assert len(starts) == 1, (flag, starts)
    text = lines[starts[0]]
    following = lines[starts[0] + 1:starts[0] + 2]
    if following and following[0].startswith(" ") and not following[0].strip().startswith("-"):
        text += " " + following[0].strip()
    return text


def argv_for(command: str, flag: str, value: str, tmp_path: Path) -> list[str]:
    """A command line that fails on ``flag value`` alone, writing nothing."""
    if command == "evaluate":
        return [command, str(tmp_path / "run"), flag, value, "--no-progress"]
    return [command, flag, value, "--out", str(tmp_path / "run"), "--no-progress"]


def test_every_fixed_choice_is_declared_once_in_its_dataclass():
    declared = {(command, flag_name(f.name), spec_of(f).choices)
                for command, (cls, skip, _) in COMMANDS.items()
                for f in flag_fields(cls) if f.name not in skip and spec_of(f).choices}
    assert declared == {(c, flag, tuple(choices)) for c, flag, choices in FIXED}


@pytest.mark.parametrize(("command", "flag", "choices"), FIXED,
                         ids=[f"{c} {f}" for c, f, _ in FIXED])
def test_fixed_choices_show_in_help_as_argparse_would(command, flag, choices, monkeypatch,
                                                      capsys):
    line = entry(help_of(command, monkeypatch, capsys), flag)
    assert line.strip().startswith(f"{flag} {{{','.join(choices)}}}"), line


@pytest.mark.parametrize(("command", "flag", "choices"), ENUMERATED,
                         ids=[f"{c} {f}" for c, f, _ in ENUMERATED])
def test_help_names_every_valid_value(command, flag, choices, monkeypatch, capsys):
    line = entry(help_of(command, monkeypatch, capsys), flag)
    for choice in choices:
        assert choice in line, (choice, line)


@pytest.mark.parametrize(("command", "flag", "choices"), ENUMERATED,
                         ids=[f"{c} {f}" for c, f, _ in ENUMERATED])
def test_a_value_not_among_the_choices_is_refused_in_one_line(command, flag, choices,
                                                              tmp_path, capsys):
    assert main(argv_for(command, flag, "bogus", tmp_path)) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rkmeta-rl: error: "), lines
    assert "'bogus'" in lines[0]
    for choice in choices:
        assert choice in lines[0], (choice, lines[0])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_setting_that_is_a_flag_appears_exactly_once(command):
    cls, skip, hand_written = COMMANDS[command]
    options = [o for a in subparser(command)._actions for o in a.option_strings
               if o not in ("-h", "--help")]
    for field in dataclasses.fields(cls):
        spec = spec_of(field)  # every field is declared with setting(...), flag or not
        count = options.count(flag_name(field.name))
        if field.name == "tableau":  # --tableau FILE is hand-written; the field is resolved
            assert not spec.flag
        elif spec.flag and field.name not in skip:
            assert count == 1, (field.name, count)
        else:
            assert count == 0, (field.name, count)
    settings = [flag_name(f.name) for f in flag_fields(cls) if f.name not in skip]
    assert sorted(options) == sorted(settings + list(hand_written))


@pytest.mark.parametrize("cls", [TrainConfig, SupervisedConfig, EvalConfig])
def test_flags_default_to_the_dataclass_alone(cls):
    """No default lives in the parser: an empty command line gives no setting."""
    parser = argparse.ArgumentParser()
    add_settings(parser, cls)
    assert given_settings(parser.parse_args([]), cls) == {}
    assert all(a.default is argparse.SUPPRESS for a in parser._actions if a.dest != "help")


def test_only_the_flags_given_are_in_the_namespace():
    args = build_parser().parse_args(["train", "--seed=3", "--first-order", "--hidden", "8,8",
                                      "--out", "somewhere"])
    assert given_settings(args, TrainConfig) == {"seed": 3, "first_order": True,
                                                 "hidden": [8, 8]}
    args = build_parser().parse_args(["supervised", "--data", "a", "b", "--ways", "5"])
    assert given_settings(args, SupervisedConfig) == {"data": ["a", "b"], "ways": 5}


def test_a_flag_given_wins_over_the_preset_even_at_the_default():
    """--meta-iters 100 (the dataclass default) given with --preset quick (300) stays 100:
    the namespace knows what was given without parsing argv again."""
    args = build_parser().parse_args(["train", "--preset", "quick", "--meta-iters", "100",
                                      "--fast-batch-size=20"])
    cfg = rl_cli.config_from_args(args)
    assert (cfg.meta_iters, cfg.fast_batch_size) == (100, 20)  # given
    assert cfg.meta_batch_size == PRESETS["quick"]["meta_batch_size"]  # the preset's
    assert cfg.curvature_fraction == PRESETS["quick"]["curvature_fraction"]
    assert cfg.seed == TrainConfig().seed  # the dataclass's


def test_an_empty_command_line_gives_the_dataclass_defaults():
    rl = rl_cli.config_from_args(build_parser().parse_args(["train"]))
    default = resolve(TrainConfig())  # the family fills hidden and the meta-batch size
    assert (rl.env, rl.method, rl.meta_iters, rl.hidden, rl.meta_batch_size) == (
        default.env, default.method, default.meta_iters, [100, 100], 40)
    assert TrainConfig().hidden is None and default.hidden == [100, 100]
    sup = supervised_cli.config_from_args(build_parser().parse_args(["supervised"]))
    assert (sup.benchmark, sup.meta_lr, sup.hidden) == ("sinusoid", 0.001, [40, 40])


# -- the helper itself --------------------------------------------------------------------


@dataclasses.dataclass
class Example:
    mode: str = setting("a", choices={"a": "first", "b": "second"}, help="100% a or b")
    extra: str | None = setting(None, choices=("x",), help="optional")
    sizes: list[int] = setting([1, 2], type=layer_sizes, help="sizes")
    fast: bool = setting(False, help="go fast")
    lr: float | None = setting(None, exclusive="step", help="α")
    step: float | None = setting(None, exclusive="step", help="h")
    resolved: float | None = setting(None, flag=False, help="filled later")


def example_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    add_settings(parser, Example)
    return parser


def test_setting_declares_a_field_and_its_flag():
    first, second = Example(), Example()
    first.sizes.append(3)
    assert second.sizes == [1, 2]  # a mutable default is copied per instance
    args = example_parser().parse_args(["--mode", "b", "--sizes", "4,5", "--fast", "--lr", "1"])
    assert given_settings(args, Example) == {"mode": "b", "sizes": [4, 5], "fast": True,
                                             "lr": 1.0}
    text = example_parser().format_help()
    assert "{a,b}" in text and "100% a or b (default: a)" in text
    assert "--resolved" not in text


def test_exclusive_settings_are_refused_together(capsys):
    with pytest.raises(SystemExit) as exc:
        example_parser().parse_args(["--lr", "1", "--step", "2"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_check_choices_refuses_in_one_line_and_passes_an_optional_none():
    check_choices(Example())
    check_choices(Example(mode="b", extra="x"))
    with pytest.raises(ValueError, match=r"^unknown mode 'c'; valid choices: a, b$"):
        check_choices(Example(mode="c"))
    with pytest.raises(ValueError, match=r"^unknown mode None; valid choices: a, b$"):
        check_choices(Example(mode=None))


def test_a_field_without_its_declaration_is_refused():
    @dataclasses.dataclass
    class Forgotten:
        known: int = setting(1, help="declared")
        new: int = 2

    with pytest.raises(TypeError, match="'new' is declared without setting"):
        add_settings(argparse.ArgumentParser(), Forgotten)


def test_a_type_argparse_cannot_read_needs_a_conversion():
    @dataclasses.dataclass
    class NoConversion:
        pairs: list[int] = setting([1], help="no type given")

    with pytest.raises(TypeError, match="give setting"):
        add_settings(argparse.ArgumentParser(), NoConversion)
