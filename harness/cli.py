"""The `eabench` command line: a thin layer over functions a notebook could call too.

Each command family lives beside the code it drives and exposes ``register(subparsers)``;
this module only wires them together. Imports are lazy so `eabench variants` does not pay
for MLflow or Optuna.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import EABenchError as UserError

# (module, attribute) pairs; each registers one or more sub-commands.
_COMMAND_MODULES = (
    "harness.commands.variants_cmd",
    "harness.data.cli",
    "harness.engine_cli",
    "studies.cli",
    "reports.cli",
    "reports.reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eabench",
        description="EA-Bench: excitation and aggregation designs in CLIP4Clip, benchmarked.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:  # a command family not built yet
            if exc.name and exc.name.startswith(mod_name.split(".")[0]):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except BrokenPipeError:  # `eabench ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
