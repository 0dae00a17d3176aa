"""Startup.bat, double-clicked on machines with and without Redis: what it starts, run by a
small interpreter of the batch language it uses (no cmd.exe installs here), with its one
question to Python (`manage.py check-redis`) asked for real."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field

import pytest

from tests.processes import PROJECT_ROOT
from tests.test_run_targets import clean_env

PYTHON = '".venv\\Scripts\\python.exe"'
DEAD_REDIS = "redis://127.0.0.1:1/0"


# -- the batch language Startup.bat speaks -----------------------------------------------------


@dataclass
class Command:
    """One command line, as written."""

    text: str


@dataclass
class Label:
    """A `:name` that goto jumps to."""

    name: str


@dataclass
class If:
    """`if [not] defined|exist|errorlevel X`, with its command or blocks."""

    negated: bool
    test: str
    operand: str
    then: list[Statement]
    otherwise: list[Statement] = field(default_factory=list)


Statement = Command | Label | If
IF = re.compile(r'^if\s+(not\s+)?(defined|exist|errorlevel)\s+("[^"]*"|\S+)\s+(.*)$', re.I)


def parse(lines: Iterator[str], in_block: bool = False) -> tuple[list[Statement], str]:
    """Read statements up to the end (or a block's closing line, which is returned)."""
    statements: list[Statement] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.lower().startswith(("rem ", "rem\t", "::")) or line.lower() == "rem":
            continue
        if in_block and line.startswith(")"):
            return statements, line
        if line.startswith(":"):
            assert not in_block, f"a label inside a block: {line}"
            statements.append(Label(line[1:].lower()))
            continue
        statements.append(parse_statement(line, lines))
    assert not in_block, "a block is not closed"
    return statements, ""


def parse_statement(line: str, lines: Iterator[str]) -> Command | If:
    match = IF.match(line)
    if not match:
        assert not line.endswith("("), f"the interpreter does not know this block: {line}"
        return Command(line)
    negated, test, operand, rest = match.groups()
    statement = If(bool(negated), test.lower(), operand.strip('"'), [])
    if rest != "(":
        statement.then = [parse_statement(rest, lines)]
        return statement
    statement.then, closing = parse(lines, in_block=True)
    if closing.replace(" ", "").lower() == ")else(":
        statement.otherwise, closing = parse(lines, in_block=True)
    assert closing == ")", f"the interpreter does not know this block end: {closing}"
    return statement


# -- a Windows machine, as far as Startup.bat can tell -------------------------------------------


@dataclass
class Window:
    """A window `start` opened: its title, its command, and the FLASK_CONFIG it was given."""

    title: str
    command: list[str]
    flask_config: str | None


@dataclass
class Machine:
    """What Startup.bat finds, and what it did there."""

    redis_url: str  # what REDIS_URL leads to: a real address, asked by check-redis
    on_path: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    venv: bool = True
    windows: list[Window] = field(default_factory=list)
    ran_here: list[list[str]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    errorlevel: int = 0
    exit_code: int | None = None


class Goto(Exception):
    def __init__(self, label: str) -> None:
        self.label = label


class Exit(Exception):
    pass


class Interpreter:
    """Runs the statements of Startup.bat on a Machine; refuses any command it does not know."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def run(self, statements: list[Statement]) -> Machine:
        labels = {s.name: i for i, s in enumerate(statements) if isinstance(s, Label)}
        position = 0
        while position < len(statements):
            statement = statements[position]
            position += 1
            try:
                self.execute(statement)
            except Goto as jump:
                position = labels[jump.label]
            except Exit:
                break
        return self.machine

    def execute(self, statement: Statement) -> None:
        if isinstance(statement, Label):
            return
        if isinstance(statement, If):
            for inner in statement.then if self.holds(statement) else statement.otherwise:
                self.execute(inner)
            return
        for alternative in split_unquoted(statement.text, "||"):
            self.command(alternative.strip())
            if self.machine.errorlevel == 0:
                break

    def holds(self, statement: If) -> bool:
        if statement.test == "defined":
            found = statement.operand in self.machine.env
        elif statement.test == "exist":
            assert statement.operand == ".venv\\Scripts\\python.exe", statement.operand
            found = self.machine.venv
        else:
            found = self.machine.errorlevel >= int(statement.operand)
        return found != statement.negated

    def command(self, text: str) -> None:
        machine = self.machine
        text = re.sub(r"\s+2?>nul", "", text, flags=re.I)
        word, _, rest = text.partition(" ")
        lowered = word.lower()
        if lowered in ("@echo", "setlocal", "endlocal"):
            return
        if lowered == "cd":
            assert rest == '/d "%~dp0"', rest
        elif lowered == "echo.":
            machine.said.append("")
        elif lowered == "echo":
            machine.said.append(rest.replace("^", ""))
        elif lowered == "set":
            name, _, value = rest.strip('"').partition("=")
            machine.env[name] = value
        elif lowered == "goto":
            raise Goto(rest.lstrip(":").lower())
        elif lowered == "pause":
            machine.said.append("Press any key to continue . . .")
        elif lowered == "exit":
            machine.exit_code = int(rest.split()[-1])
            raise Exit
        elif lowered == "where":
            machine.errorlevel = 0 if rest in machine.on_path else 1
        elif lowered == "start":
            title, command = re.fullmatch(r'"([^"]*)"\s+(.*)', rest).groups()  # type: ignore[union-attr]
            argv = shlex.split(command.replace("\\", "/"))
            machine.windows.append(Window(title, argv, machine.env.get("FLASK_CONFIG")))
            machine.errorlevel = 0
        elif text.startswith(PYTHON):
            machine.errorlevel = self.python(shlex.split(text[len(PYTHON) :]))
        elif lowered in ("py", "python"):
            machine.ran_here.append(shlex.split(text))
            machine.venv = True
            machine.errorlevel = 0
        else:
            raise AssertionError(f"the interpreter does not know this command: {text}")

    def python(self, args: list[str]) -> int:
        """Run the venv's Python: check-redis for real, anything else is only noted."""
        self.machine.ran_here.append(args)
        if args != ["manage.py", "check-redis"]:
            return 0
        done = subprocess.run(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env=clean_env(REDIS_URL=self.machine.redis_url, **self.machine.env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.machine.said.extend((done.stdout + done.stderr).splitlines())
        return done.returncode


def split_unquoted(text: str, separator: str) -> list[str]:
    parts = re.split(rf'{re.escape(separator)}(?=(?:[^"]*"[^"]*")*[^"]*$)', text)
    return [part for part in parts if part.strip()]


def double_click(machine: Machine) -> Machine:
    """Run Startup.bat on `machine`, as a double-click does."""
    text = (PROJECT_ROOT / "Startup.bat").read_bytes().decode()
    statements, _ = parse(iter(text.splitlines()))
    return Interpreter(machine).run(statements)


def titles(machine: Machine) -> list[str]:
    return [window.title.removeprefix("Manifest Syncer - ") for window in machine.windows]


# -- what a double-click does -------------------------------------------------------------------


def test_with_only_python_it_runs_the_embedded_stack_in_its_own_window() -> None:
    machine = double_click(Machine(redis_url=DEAD_REDIS))
    assert machine.windows == []  # no window that would fail to connect
    assert machine.ran_here[-1] == ["manage.py", "dev"]
    said = "\n".join(machine.said)
    assert "No Redis here" in said
    assert "embedded server" in said
    assert machine.env["FLASK_CONFIG"] == "development"


def test_with_redis_answering_it_starts_worker_beat_web_and_the_demo_origin(
    redis_url: str,
) -> None:
    machine = double_click(Machine(redis_url=redis_url))
    assert titles(machine) == ["demo origin", "worker", "beat", "web"]
    assert ["manage.py", "dev"] not in machine.ran_here
    assert all(window.flask_config == "development" for window in machine.windows)
    worker = machine.windows[1].command
    assert "--pool=solo" in worker
    assert "Redis answers at" in "\n".join(machine.said)


def test_with_redis_server_on_path_it_starts_it_first() -> None:
    machine = double_click(Machine(redis_url=DEAD_REDIS, on_path={"redis-server"}))
    assert titles(machine) == ["Redis", "demo origin", "worker", "beat", "web"]
    assert ["manage.py", "dev"] not in machine.ran_here


def test_with_bungie_set_there_is_no_demo_origin(redis_url: str) -> None:
    env = {"BUNGIE_BASE_URL": "https://www.bungie.net", "FLASK_CONFIG": "production"}
    machine = double_click(Machine(redis_url=redis_url, env=env))
    assert titles(machine) == ["worker", "beat", "web"]
    assert all(window.flask_config == "production" for window in machine.windows)


def test_the_first_run_creates_the_venv_then_goes_on() -> None:
    machine = double_click(Machine(redis_url=DEAD_REDIS, venv=False))
    assert machine.ran_here[0][:3] == ["py", "-3", "-m"]
    assert ["-m", "pip", "install", "-e", "."] in machine.ran_here
    assert machine.ran_here[-1] == ["manage.py", "dev"]


@pytest.mark.parametrize(
    ("url", "code", "line"),
    [
        (None, 0, "Redis answers at"),
        ("redis://:sek-password@127.0.0.1:1/0", 1, "Redis does not answer at redis://:***@"),
    ],
)
def test_check_redis_says_whether_redis_answers(
    url: str | None, code: int, line: str, redis_url: str
) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check-redis"],
        cwd=PROJECT_ROOT,
        env=clean_env(FLASK_CONFIG="development", REDIS_URL=url or redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code
    assert line in done.stdout + done.stderr
    assert "sek-password" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
