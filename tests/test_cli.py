"""Every `reprsim` subcommand reaches a handler that exists, and has --help."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io

import pytest

from repr_sim import cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_handler_exists():
    source = (cli.__file__ and open(cli.__file__, encoding="utf-8").read())
    for name in subcommands():
        spec = next(line.split('"')[3] for line in source.splitlines()
                    if f'_add(sub, "{name}", ' in line)
        module, func = spec.split(":")
        assert callable(getattr(importlib.import_module(f"repr_sim.{module}"), func)), spec


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help(name):
    out = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stdout(out):
        cli.main([name, "--help"])
    assert e.value.code == 0 and "usage: reprsim " + name in out.getvalue()
