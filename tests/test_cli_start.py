"""The ``fpezoo`` command starts fast (no TensorFlow for card, --help, --version) and quietly."""

import json
import os
import subprocess
import sys
import threading

import pytest

import fpezoo
from fpezoo import cli

# Runs fpezoo.cli.main with the given arguments, then prints which heavy modules it imported.
RUN_CLI = """
import json, sys
from fpezoo.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def run_cli(*args, verbose=False):
    """``(exit code, heavy modules imported, stdout without the last line, stderr)``."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-c", RUN_CLI, *(["--verbose"] if verbose else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    *output, last = result.stdout.splitlines()
    report = json.loads(last)
    return report["code"], report["heavy"], "\n".join(output), result.stderr


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["card"], ["card", "fpenet68_w32"], ["card", "--help"]])
def test_card_help_and_version_start_without_tensorflow(args):
    code, heavy, output, stderr = run_cli(*args)
    assert code == 0 and heavy == [] and stderr == "", (code, heavy, stderr)
    if args == ["--version"]:
        assert output == f"fpezoo {fpezoo.__version__}"


def test_native_log_lines_are_dropped_unless_verbose(tmp_path):
    # Loads Keras (so TensorFlow) before failing on the missing file: a quick real start.
    args = ["convert", str(tmp_path / "missing.keras"), "--to", "onnx", "--output", str(tmp_path / "x.onnx")]
    code, heavy, _, stderr = run_cli(*args)
    assert code == 2 and "tensorflow" in heavy
    assert stderr.splitlines() == [f"error: Model file not found. Received: source={args[1]!r}"]
    # The same start with --verbose shows TensorFlow's own lines, which the quiet run dropped.
    code, _, _, stderr = run_cli(*args, verbose=True)
    logged = [line for line in stderr.splitlines() if cli.NATIVE_LOG_ENTRY.match(line.encode())]
    assert code == 2 and logged, stderr


def test_verbose_is_taken_after_the_subcommand_too():
    code, heavy, output, _ = run_cli("card", "--verbose")
    assert code == 0 and "fpenet68_w32" in output and heavy == []


def filtered(pieces, pause_after=()):
    """What the stderr filter passes on of ``pieces`` written one by one (pausing after some)."""
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    reader = threading.Thread(target=cli._forward_unlogged, args=(read_end, out_write))
    reader.start()
    forwarded = b""
    for index, piece in enumerate(pieces):
        os.write(write_end, piece)
        if index in pause_after:
            threading.Event().wait(3 * cli.PARTIAL_LINE_WAIT_S)
            forwarded += os.read(out_read, 65536)
    os.close(write_end)
    reader.join()
    with open(out_read, "rb") as rest:
        return forwarded, forwarded + rest.read()


def test_stderr_filter_drops_log_lines_written_in_pieces_and_keeps_the_rest():
    pieces = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
              b"I0000 00:00:1796651427.411313    7039 port.cc:153] oneDNN custom operations are on.\n"
              b"a Python warning\n",
              b"INFO: ", b"Created TensorFlow Lite XNNPACK delegate for CPU.", b"\n",
              b"\r 50%|#####     |",
              # LiteRT's notice, written in pieces after a progress bar's unterminated line.
              b"\r 60%|######    |INFO: ", b"Created TensorFlow Lite XNNPACK delegate for CPU.", b"\n",
              b"\r100%|##########|\n"]
    shown_during_pause, everything = filtered(pieces, pause_after={5})
    assert everything == b"a Python warning\n\r 50%|#####     |\r 60%|######    |\r100%|##########|\n"
    # A progress bar's unterminated line is shown while the bar runs, not at its end.
    assert shown_during_pause == b"a Python warning\n\r 50%|#####     |"


def test_stderr_filter_keeps_reading_when_standard_error_is_gone():
    read_end, write_end = os.pipe()
    gone_read, gone_write = os.pipe()
    os.close(gone_read)  # as when `fpezoo ... 2>&1 | head` has exited
    reader = threading.Thread(target=cli._forward_unlogged, args=(read_end, gone_write), daemon=True)
    reader.start()

    errors = []

    def write_more_than_a_pipe_holds():
        try:
            for _ in range(64):
                os.write(write_end, b"x" * 65535 + b"\n")
        except OSError as error:
            errors.append(error)
        os.close(write_end)

    writer = threading.Thread(target=write_more_than_a_pipe_holds, daemon=True)
    writer.start()
    writer.join(timeout=30)
    reader.join(timeout=5)
    # Writers neither block nor fail: what they write is dropped.
    assert not writer.is_alive() and not reader.is_alive() and errors == []
