"""The README's accuracy table, generated from the evaluation results in ``docs/results``.

Each ``docs/results/*.json`` file is the output of ``fpezoo evaluate --out`` plus a
``"command"`` key: the command that produced it, written by the ``record`` mode of
this script (so the table can always say how a number was measured).

Usage::

    # Run an evaluation and keep its command in the result file:
    nice -n 5 python scripts/accuracy_table.py record fpezoo evaluate fpenet68_w32 \\
        --benchmark aflw2000-3d --no-progress --out docs/results/fpenet68_w32_aflw2000_3d.json
    # Print the Markdown table (pasted into README.md between the accuracy-table markers):
    python scripts/accuracy_table.py
"""

import argparse
import json
import pathlib
import shlex
import subprocess
import sys

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results"
YAW_BINS = ("0-30", "30-60", "60+")
HEADER = (
    "| model | benchmark | protocol | NME 0-30° | NME 30-60° | NME 60+° | mean NME | "
    "failure rate (NME > 0.1) | command |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _percent(value):
    return f"{100 * value:.2f} %"


def protocol(results):
    """A short description of the benchmark protocol of one result dict.

    Args:
        results: a result dict of :func:`fpezoo.evaluate`.

    Returns:
        The protocol as Markdown text.

    Raises:
        ValueError: for a benchmark the table does not describe.
    """
    crop = results["crop"]
    flip = ", flip test" if crop["flip_test"] else ""
    limit = f", first {results['limit']} faces" if results.get("limit") else ""
    if results["benchmark"] == "aflw2000-3d":
        text = (f"3DDFA: {results['faces']} faces, crop {crop['enlarge']:.3g} x the fitted "
                f"landmark box, NME / sqrt(w h) of that box, mean of the \\|yaw\\| bins")
    elif results["benchmark"] == "mtfl":
        framing = (f"crop {crop['enlarge']:.3g} x the labels' five-point box"
                   if crop.get("box") == "landmarks" else "each 80x80 crop whole")
        text = f"MTFL test: {results['faces']} faces, {framing}, NME / eye-centre distance"
    else:
        raise ValueError(
            f"The accuracy table describes the 'aflw2000-3d' and 'mtfl' benchmarks. "
            f"Received: benchmark={results['benchmark']!r}")
    return text + flip + limit


def table_row(results):
    """One Markdown table row for a result dict that holds its ``"command"``.

    Args:
        results: a result dict of :func:`fpezoo.evaluate` with a ``"command"`` key.

    Returns:
        The row as a string.

    Raises:
        ValueError: when the result has no ``"command"``.
    """
    if "command" not in results:
        raise ValueError(
            "A result file of the table must hold the command that produced it (write it with "
            f"`python scripts/accuracy_table.py record ...`). Received: model={results['model']!r}")
    primary = results[results["primary"]]
    bins = primary.get("bins") or {}
    cells = [_percent(bins[label]["mean"]) if label in bins else "—" for label in YAW_BINS]
    return "| " + " | ".join([
        f"`{results['model']}`", results["benchmark"], protocol(results), *cells,
        f"**{_percent(primary['mean'])}**", _percent(primary["failure_rate"]),
        f"`{results['command']}`",
    ]) + " |"


def markdown_table(folder=RESULTS):
    """The Markdown table of every ``*.json`` result file of ``folder``, sorted by name.

    Args:
        folder: the results folder.

    Returns:
        The table (header and one row per file), without a trailing newline.

    Raises:
        FileNotFoundError: when the folder holds no result file.
    """
    files = sorted(pathlib.Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"No result files (*.json) in the folder. Received: folder={str(folder)!r}")
    rows = [table_row(json.loads(path.read_text())) for path in files]
    return "\n".join([HEADER, *rows])


def record(command):
    """Runs an ``fpezoo evaluate ... --out FILE`` command and stores it in FILE.

    Args:
        command: the command's words, starting with ``fpezoo evaluate``.

    Returns:
        The command's exit code.

    Raises:
        ValueError: when the command is not ``fpezoo evaluate`` with ``--out``.
    """
    from fpezoo import evaluation

    if command[:2] != ["fpezoo", "evaluate"]:
        raise ValueError(f"record runs `fpezoo evaluate ...` commands. Received: command={command!r}")
    parser = argparse.ArgumentParser(prog="fpezoo evaluate")
    evaluation.configure_parser(parser)
    options = parser.parse_args(command[2:])
    if not options.out or options.ced:
        raise ValueError(f"record needs an evaluation with --out FILE. Received: command={command!r}")
    code = subprocess.call(command)
    if code == 0:
        path = pathlib.Path(options.out)
        results = json.loads(path.read_text())
        results["command"] = shlex.join(command)
        path.write_text(json.dumps(results, indent=1))
    return code


def main(argv=None):
    """Prints the table, or with ``record COMMAND...`` runs and records an evaluation."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["record"]:
        return record(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS, help="folder of result JSON files")
    print(markdown_table(parser.parse_args(argv).results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
