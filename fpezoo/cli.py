"""The ``fpezoo`` command.

Each subcommand lives in the module that implements it; that module exposes
``configure_parser(parser)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs.
"""

import argparse
import importlib
import sys

# Subcommand -> (module, one-line help).
SUBCOMMANDS = {
    "predict": ("fpezoo.predict_cli", "landmarks for images, folders or videos"),
    "demo": ("fpezoo.demo", "run the bundled example photo"),
    "train": ("fpezoo.training", "train or fine-tune a model from a config"),
    "evaluate": ("fpezoo.evaluation", "score a model on a benchmark"),
    "convert": ("fpezoo.deploy.convert", "export for deployment"),
    "benchmark": ("fpezoo.benchmarking", "measure inference speed"),
    "card": ("fpezoo.weights", "show the model card of registered weights"),
}


def build_parser(subcommands=SUBCOMMANDS):
    parser = argparse.ArgumentParser(prog="fpezoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in subcommands.items():
        sub_parser = sub.add_parser(name, help=help_text)
        sub_parser.set_defaults(_module=module_name)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the subcommand; its module then declares its own options.
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    sub_parser = argparse.ArgumentParser(prog=f"fpezoo {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.configure_parser(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
