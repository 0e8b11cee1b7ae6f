"""The `eabench` command line: a thin layer over functions a notebook could call too.

Each package owns its commands in its own ``cli.py`` and exposes ``register(subparsers)``; this
module only wires them together. Primary output (tables, JSON) goes to stdout; logs and progress
to stderr.
"""
from __future__ import annotations

import argparse
import sys

from harness import variants_cli
from harness.data import cli as data_cli
from harness.errors import EABenchError
from harness.train import cli as train_cli
from reports import cli as reports_cli
from studies import cli as studies_cli

_COMMANDS = (variants_cli, data_cli, train_cli, studies_cli, reports_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eabench",
        description="EA-Bench: excitation and aggregation designs in CLIP4Clip, benchmarked.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = args.func(args)
    except BrokenPipeError:  # `eabench ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EABenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
