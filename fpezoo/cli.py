"""The ``fpezoo`` command.

Each subcommand lives in the module that implements it; that module exposes
``configure_parser(parser)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs, so ``fpezoo --help``, ``fpezoo --version`` and
``fpezoo card`` start without TensorFlow.

TensorFlow, absl and LiteRT write start-up and runtime logs straight to the
process's standard error (``oneDNN custom operations are on``, ``failed call to
cuInit``, ``Created TensorFlow Lite XNNPACK delegate``), some before any
setting can silence them. Unless ``--verbose`` is given, the command sets
``TF_CPP_MIN_LOG_LEVEL=3`` (when unset) before TensorFlow loads and drops those
lines from standard error (:func:`quiet_native_logs`); everything else written
there passes through.
"""

import argparse
import contextlib
import importlib
import os
import re
import select
import sys
import threading

from fpezoo import __version__

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
USAGE_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C
VERBOSE_HELP = "show TensorFlow's, absl's and LiteRT's own log lines on standard error"
# What native loggers write, dropped from standard error without --verbose: absl / glog
# lines ("I0000 00:00:1796651427.411313    7039 port.cc:153] ...": before absl logging is
# initialised its clock reads seconds since 1970), absl's notice that logging is not
# initialised, and LiteRT's start-up notices. A log line may follow a progress bar's
# unterminated line, so these are found anywhere, each up to its newline.
NATIVE_LOG_ENTRY = re.compile(
    rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: Created TensorFlow Lite \w+ delegate for \w+\."
    rb"|INFO: Initialized TensorFlow Lite runtime\."
)
NATIVE_LOG_LINE = re.compile(rb"(?:" + NATIVE_LOG_ENTRY.pattern + rb")[^\n]*\n")
# How those entries start: an unterminated line's text from such a start waits for
# more (LiteRT writes "INFO: " and its message separately), at most
# PARTIAL_LINE_WAIT_S unless it is a whole entry; text before it goes on at once.
NATIVE_LOG_START = re.compile(rb"[IWEF]\d{4} |WARNING: All |INFO: ")
PARTIAL_LINE_WAIT_S = 0.1


def build_parser(subcommands=SUBCOMMANDS):
    """The top-level parser: ``--version``, ``--verbose`` and one subparser per subcommand.

    The subparsers take no options of their own (``add_help=False``): the
    subcommand's module declares them once it is imported (see :func:`main`).
    """
    parser = argparse.ArgumentParser(prog="fpezoo", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"fpezoo {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in subcommands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    """Runs ``fpezoo [--verbose] COMMAND [options]``; returns the exit code.

    ``--verbose`` is taken before or after the subcommand. A subcommand that
    stops on bad input it did not report itself (a file it cannot read or
    write, a bad value) prints one ``error:`` line and exits with
    :data:`USAGE_EXIT_CODE` (with ``--verbose``, the traceback instead); Ctrl-C
    prints one line and exits with :data:`INTERRUPTED_EXIT_CODE`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    verbose = args.verbose or "--verbose" in rest
    with contextlib.nullcontext() if verbose else quiet_native_logs():
        module_name, help_text = SUBCOMMANDS[args.command]
        module = importlib.import_module(module_name)
        sub_parser = argparse.ArgumentParser(prog=f"fpezoo {args.command}", description=help_text)
        sub_parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
        module.configure_parser(sub_parser)
        sub_args = sub_parser.parse_args(rest)
        try:
            return module.run(sub_args)
        except KeyboardInterrupt:
            print(f"interrupted: fpezoo {args.command} stopped", file=sys.stderr)
            return INTERRUPTED_EXIT_CODE
        except (OSError, ValueError, TypeError, LookupError) as error:
            if verbose:
                raise  # --verbose: the whole traceback
            print(f"error: {error}", file=sys.stderr)
            return USAGE_EXIT_CODE


@contextlib.contextmanager
def quiet_native_logs():
    """Silences TensorFlow's, absl's and LiteRT's log lines on standard error for the block.

    ``TF_CPP_MIN_LOG_LEVEL`` is set to 3 when unset (it must be set before
    TensorFlow loads, and silences its logs once absl logging is initialised).
    The lines written before that (absl's ``All log messages before
    absl::InitializeLog()``, ``oneDNN custom operations are on``...) and LiteRT's
    notices bypass it, so file descriptor 2 is also routed through a pipe whose
    reader drops the lines :data:`NATIVE_LOG_LINE` matches and passes every other
    byte on, a progress bar's unterminated line at once (on POSIX systems, whose
    pipes ``select`` can wait on; elsewhere only the variable is set).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.name != "posix":
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_forward_unlogged, args=(read_end, os.dup(original)),
                              name="fpezoo-stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the reader sees its end
        os.close(original)
        reader.join(timeout=1)


def _forward_unlogged(read_end, target):
    """Copies ``read_end`` to ``target`` without native log lines; closes both at the end.

    When ``target`` fails (say a closed pipe), the rest is read and dropped, so
    that writers to ``read_end``'s pipe never block on a full pipe.
    """
    with open(read_end, "rb", buffering=0) as source, open(target, "wb", buffering=0) as sink:
        try:
            _filter(source, sink)
        except OSError:
            while source.read(65536):
                pass


def _filter(source, sink):
    """Copies ``source`` to ``sink`` (unbuffered binary files) without native log lines."""
    pending = b""
    while True:
        if pending and not select.select([source], [], [], PARTIAL_LINE_WAIT_S)[0]:
            # Nothing more came: unless it is a log entry awaiting its newline, it goes on.
            if not NATIVE_LOG_ENTRY.match(pending):
                sink.write(pending)
                pending = b""
            continue
        chunk = source.read(65536)
        if not chunk:
            break
        text = NATIVE_LOG_LINE.sub(b"", pending + chunk)
        start = NATIVE_LOG_START.search(text, text.rfind(b"\n") + 1)
        cut = len(text) if start is None else start.start()
        text, pending = text[:cut], text[cut:]
        if text:
            sink.write(text)
    if pending and not NATIVE_LOG_ENTRY.match(pending):
        sink.write(pending)


if __name__ == "__main__":
    sys.exit(main())
