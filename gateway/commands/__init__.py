"""The `frugalsense` subcommands, one module each; `command_group` lets several modules share one group.

>>> import argparse
>>> sub = argparse.ArgumentParser(prog="frugalsense").add_subparsers()
>>> command_group(sub, "train", help="train or retrain models", metavar="MODEL") is \\
...     command_group(sub, "train", help="train or retrain models", metavar="MODEL")
True
"""

from __future__ import annotations

import argparse


def command_group(subparsers, name: str, *, help: str, metavar: str):
    """The sub-commands of ``frugalsense <name>``, created by the first module that asks, shared by the rest."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
        return parser.add_subparsers(dest=f"{name}_command", metavar=metavar)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
