"""The README's accuracy table, generated from the evaluation results in ``docs/results``.

Each ``docs/results/*.json`` file is the output of ``fpezoo evaluate --out`` plus a
``"command"`` key: the command that produced it, written by the ``record`` mode of
this script (so the table can always say how a number was measured). The output
names the sha256 of the weights it measured; a result of a registered name must
name the weights registered now (else the table would show numbers of replaced
weights), and the table shows the first digits.

Usage::

    # Run an evaluation and keep its command in the result file:
    nice -n 5 python scripts/accuracy_table.py record fpezoo evaluate fpenet68_w32 \\
        --benchmark aflw2000-3d --no-progress --out docs/results/fpenet68_w32_aflw2000_3d.json
    # Print the Markdown table:
    python scripts/accuracy_table.py
    # Write it into README.md between the accuracy-table markers:
    python scripts/accuracy_table.py --write README.md
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
    "| model | weights sha256 | benchmark | protocol | NME 0-30° | NME 30-60° | NME 60+° | mean NME | "
    "failure rate (NME > 0.1) | command |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)
TABLE_START = "<!-- accuracy-table:start -->"
TABLE_END = "<!-- accuracy-table:end -->"
SHA256_DIGITS_SHOWN = 8


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
    rotation = crop.get("rotation")
    if rotation:  # fpezoo evaluate --rotation: images turned about the face
        flip += f", images turned by a random angle in +-{rotation['max_deg']:g}° (seed {rotation['seed']})"
    if crop.get("upright_pass"):  # fpezoo evaluate --upright-pass: the predictor's second, upright crop
        flip += ", upright pass"
    if crop.get("roll_search"):  # fpezoo evaluate --roll-search: four turned crops, the best upright re-crop
        flip += ", roll search"
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


def measured_weights(results, registry):
    """The sha256 of the weights a result measured, checked against the registry.

    Args:
        results: a result dict of :func:`fpezoo.evaluate`.
        registry: the weights registry (:func:`fpezoo.weights.registry`).

    Returns:
        The result's ``"weights_sha256"``.

    Raises:
        ValueError: when the result names no weights, or names other weights
            than those registered now under its (unpinned) registered name.
    """
    from fpezoo import weights

    recorded = results.get("weights_sha256")
    if not recorded:
        raise ValueError(
            "A result file of the table must name the sha256 of the weights it measured (record it "
            f"again with its command). Received: model={results['model']!r}, weights_sha256={recorded!r}")
    name, pin = weights.split_pin(results["model"])
    entry = registry.get(name)
    if entry is not None and pin is None and entry["sha256"] != recorded:
        raise ValueError(
            f"The result of {name!r} measured weights with sha256 {recorded[:12]}..., but {name!r} is "
            f"registered with {entry['sha256'][:12]}... now: record the result again with its command "
            f"({results.get('command')!r}). Received: weights_sha256={recorded!r}")
    return recorded


def table_row(results, registry):
    """One Markdown table row for a result dict that holds its ``"command"``.

    Args:
        results: a result dict of :func:`fpezoo.evaluate` with a ``"command"`` key.
        registry: the weights registry (:func:`fpezoo.weights.registry`).

    Returns:
        The row as a string.

    Raises:
        ValueError: when the result has no ``"command"``, or its weights are
            not those registered now (:func:`measured_weights`).
    """
    if "command" not in results:
        raise ValueError(
            "A result file of the table must hold the command that produced it (write it with "
            f"`python scripts/accuracy_table.py record ...`). Received: model={results['model']!r}")
    sha = measured_weights(results, registry)[:SHA256_DIGITS_SHOWN]
    primary = results[results["primary"]]
    bins = primary.get("bins") or {}
    cells = [_percent(bins[label]["mean"]) if label in bins else "—" for label in YAW_BINS]
    return "| " + " | ".join([
        f"`{results['model']}`", f"`{sha}`", results["benchmark"], protocol(results), *cells,
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
    from fpezoo import weights

    registry = weights.registry()
    rows = [table_row(json.loads(path.read_text()), registry) for path in files]
    return "\n".join([HEADER, *rows])


def table_section(text):
    """The ``(start, end)`` offsets of the table between the markers of a README text.

    Raises:
        ValueError: unless each marker appears once, the start before the end.
    """
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if text.count(TABLE_START) != 1 or text.count(TABLE_END) != 1 or end < start:
        raise ValueError(
            f"The README must hold {TABLE_START} once, then {TABLE_END} once. "
            f"Received: start markers={text.count(TABLE_START)}, end markers={text.count(TABLE_END)}")
    return start + len(TABLE_START), end


def write_table(readme, folder=RESULTS):
    """Replaces the table between the markers of ``readme`` with :func:`markdown_table`."""
    readme = pathlib.Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = table_section(text)
    table = markdown_table(folder)
    readme.write_text(f"{text[:start]}\n{table}\n{text[end:]}", encoding="utf-8")


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
    parser.add_argument("--write", type=pathlib.Path, metavar="README",
                        help="write the table into this file between the accuracy-table markers")
    args = parser.parse_args(argv)
    if args.write:
        write_table(args.write, args.results)
    else:
        print(markdown_table(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
