"""README.md stays true: its examples run, its commands parse, its tables are generated.

* Every ```python block runs, in README order, in one namespace (a later example
  may use what an earlier one defined, as a reader following the README would),
  inside a temporary folder. Blocks that read ``FPEZOO_DATA`` get the path of
  the ``shared_data`` fixture (and are skipped with its reason without the data).
* Every ``fpezoo`` / ``fpezoo-convert`` command of a ```bash block is parsed with
  the options its module declares (commands are not run): the subcommand and
  every option must exist and take the values given.
* The accuracy table between the ``accuracy-table`` markers is the output of
  ``scripts/accuracy_table.py`` on ``docs/results/*.json`` (whose results of
  registered names measured the weights registered now); the speed table
  between the ``speed-table`` markers is ``fpezoo benchmark``'s table of
  ``docs/benchmarks/inference_speed.json``.
"""

import argparse
import importlib
import importlib.util
import json
import pathlib
import re
import shlex

import pytest

from fpezoo import cli

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = PROJECT_ROOT / "README.md"
FENCE = re.compile(r"^```(?P<language>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
KNOWN_LANGUAGES = ("python", "bash", "text")
COMMANDS = ("fpezoo", "fpezoo-convert")
SHELL_SEPARATORS = ("&&", "||", ";", "|")
SPEED_START = "<!-- speed-table:start -->"
SPEED_END = "<!-- speed-table:end -->"
SPEED_RESULTS = PROJECT_ROOT / "docs" / "benchmarks" / "inference_speed.json"
SETUP_COMMANDS = ('pip install ".[all]" && fpezoo demo', 'pip install ".[all,test]" && python -m pytest -q -ra')


def fenced_blocks(text):
    """The fenced code blocks of Markdown text: ``(language, line number, code)``."""
    return [(match["language"].strip(), text.count("\n", 0, match.start()) + 1, match["code"])
            for match in FENCE.finditer(text)]


def shell_commands(code):
    """The fpezoo commands of a shell block, as word lists (continuations joined, comments dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        current = []
        for word in shlex.split(line, comments=True) + [";"]:
            if word in SHELL_SEPARATORS:
                if current and current[0] in COMMANDS:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


class _StrictParser(argparse.ArgumentParser):
    """An argument parser that raises instead of printing usage and exiting."""

    def error(self, message):
        raise ValueError(f"{self.prog}: {message}")


def parse_command(words):
    """Parses an ``fpezoo`` or ``fpezoo-convert`` command as its module declares it."""
    if words[0] == "fpezoo-convert":
        module_name, prog, argv = "fpezoo.deploy.convert", "fpezoo-convert", words[1:]
    else:
        assert len(words) > 1 and words[1] in cli.SUBCOMMANDS, f"unknown fpezoo subcommand in {words}"
        module_name, prog, argv = cli.SUBCOMMANDS[words[1]][0], f"fpezoo {words[1]}", words[2:]
    parser = _StrictParser(prog=prog)
    importlib.import_module(module_name).configure_parser(parser)
    return parser.parse_args(argv)


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [
    pytest.param(line, code, id=f"line{line}", marks=[pytest.mark.data] if "FPEZOO_DATA" in code else [])
    for language, line, code in BLOCKS if language == "python"
]
SHELL_COMMANDS = [(line, words) for language, line, code in BLOCKS if language == "bash"
                  for words in shell_commands(code)]


def test_fences_are_known_and_examples_exist():
    # A block in another language (say ```py) would escape the checks below.
    assert {language for language, _, _ in BLOCKS} <= set(KNOWN_LANGUAGES)
    assert PYTHON_BLOCKS and SHELL_COMMANDS


def test_setup_commands_come_first_verbatim():
    # .ci/run installs the project and runs the second command.
    assert [(language, code.strip()) for language, _, code in BLOCKS[:2]] == [
        ("bash", command) for command in SETUP_COMMANDS]


@pytest.fixture(scope="module")
def readme_namespace():
    """The namespace shared by the README's Python examples, in README order."""
    return {"__name__": "__readme__"}


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("line, code", PYTHON_BLOCKS)
def test_python_example_runs(line, code, readme_namespace, readme_folder, request, monkeypatch):
    monkeypatch.chdir(readme_folder)
    if "FPEZOO_DATA" in code:
        monkeypatch.setenv("FPEZOO_DATA", str(request.getfixturevalue("shared_data")))
    exec(compile(code, f"README.md:{line}", "exec"), readme_namespace)


@pytest.mark.parametrize("line, words", SHELL_COMMANDS,
                         ids=[f"line{line}-{'-'.join(words[:2])}" for line, words in SHELL_COMMANDS])
def test_shell_command_parses(line, words):
    parse_command(words)


def test_command_check_rejects_unknown_options():
    with pytest.raises(ValueError, match="unrecognized arguments: --no-such-option"):
        parse_command(["fpezoo", "evaluate", "fpenet68_w32", "--no-such-option"])
    with pytest.raises(ValueError, match="invalid choice"):
        parse_command(["fpezoo-convert", "fpenet68_w32", "--to", "coreml", "--output", "x"])
    assert shell_commands("nice -n 5 ls && fpezoo card fpenet68_w32  # a card\n"
                          "fpezoo convert m \\\n  --output x.onnx") == [
        ["fpezoo", "card", "fpenet68_w32"], ["fpezoo", "convert", "m", "--output", "x.onnx"]]


def _accuracy_table_script():
    spec = importlib.util.spec_from_file_location("accuracy_table", PROJECT_ROOT / "scripts" / "accuracy_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accuracy_table_is_generated():
    # Generating it also checks that every result of a registered name measured
    # the weights registered now (scripts/accuracy_table.py measured_weights).
    script = _accuracy_table_script()
    text = README.read_text(encoding="utf-8")
    start, end = script.table_section(text)
    assert text[start:end].strip() == script.markdown_table()


def _first_result():
    return json.loads(sorted((PROJECT_ROOT / "docs" / "results").glob("*.json"))[0].read_text())


def test_accuracy_table_needs_the_command_and_the_registered_weights(tmp_path):
    script = _accuracy_table_script()
    results = _first_result()
    (tmp_path / "result.json").write_text(json.dumps(results))
    assert script.markdown_table(tmp_path).count("\n") == 2
    for changed, message in [({"command": None}, "must hold the command"),
                             ({"weights_sha256": None}, "must name the sha256"),
                             ({"weights_sha256": "0" * 64}, "record the result again")]:
        broken = {key: value for key, value in {**results, **changed}.items() if value is not None}
        (tmp_path / "result.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            script.markdown_table(tmp_path)
    with pytest.raises(FileNotFoundError, match="No result files"):
        script.markdown_table(tmp_path / "empty")


def test_accuracy_table_write_replaces_only_the_marked_section(tmp_path):
    script = _accuracy_table_script()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text(json.dumps(_first_result()))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{script.TABLE_START}\nold table\n{script.TABLE_END}\nrest\n")
    assert script.main(["--write", str(readme), "--results", str(tmp_path / "results")]) == 0
    assert readme.read_text() == (f"intro\n{script.TABLE_START}\n{script.markdown_table(tmp_path / 'results')}\n"
                                  f"{script.TABLE_END}\nrest\n")
    readme.write_text(f"no markers\n{script.TABLE_END}\n")
    with pytest.raises(ValueError, match="must hold"):
        script.write_table(readme, tmp_path / "results")
    assert readme.read_text() == f"no markers\n{script.TABLE_END}\n"


def test_speed_table_is_the_benchmark_json():
    from fpezoo.benchmarking import format_table

    text = README.read_text(encoding="utf-8")
    assert text.count(SPEED_START) == 1 and text.count(SPEED_END) == 1
    section = text.split(SPEED_START)[1].split(SPEED_END)[0].strip()
    report = json.loads(SPEED_RESULTS.read_text(encoding="utf-8"))
    assert section == f"```text\n{format_table(report)}\n```"
    # The command shown above the table is the one recorded with the results.
    assert report["command"] in text
