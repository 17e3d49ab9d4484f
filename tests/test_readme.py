"""Every transcript in the README is what the real command prints.

A transcript is a fenced block without a language whose first line starts with ``$ ``. Each block runs
on a freshly seeded copy of the example app's databases (``litestar db run --file examples/seed.py``),
its commands in order, through ``bash`` as a user types them, with output piped. A command followed by
prompt lines (``... >>> code``) is an interactive shell: it runs on a pseudo-terminal and gets the code
typed in. Paths, timings and the SQLite version are normalised, and table borders and column padding
are ignored (they follow the width of the paths); every word must match.

``python -m tests.test_readme`` prints each block's real output, for updating the README.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
PROMPT = re.compile(r"^(?P<prompt>\S+(?: \[[a-z-]+\])?(?: \S+@\S+)*) >>> (?P<code>.*)$")
BOX = re.compile(r"[\u2500-\u257f]")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)

    @property
    def typed(self) -> list[str]:
        """Code typed at the prompt, when this command is an interactive shell."""
        return [m["code"] for line in self.expected if (m := PROMPT.match(line))]


def transcripts() -> list[list[Step]]:
    blocks = re.findall(r"^```\n(\$ .*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    found = []
    for block in blocks:
        steps: list[Step] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            else:
                steps[-1].expected.append(line)
        found.append(steps)
    return found


def normalise(lines: list[str], data_dir: Path | None = None) -> list[str]:
    text = "\n".join(lines).replace("\r", "")
    if data_dir is not None:
        text = text.replace(str(data_dir.parent), "…")
    text = re.sub(r"\d+(?:\.\d+)? ms\b", "<ms>", text)
    text = re.sub(r"SQLite \d+(?:\.\d+)+", "SQLite <version>", text)
    words = (" ".join(BOX.sub(" ", line).split()) for line in text.splitlines())
    return [line for line in words if line]


def environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "LITESTAR_APP")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        LITESTAR_APP="examples.app:app",
        EXAMPLE_DATA_DIR=str(data_dir),
        XDG_STATE_HOME=str(data_dir.parent / "state"),
    )
    return env


def run_piped(command: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False, timeout=120)  # fmt: skip
    return done.stdout.splitlines()


def run_on_terminal(command: str, typed: list[str], env: dict[str, str]) -> list[str]:
    """Run an interactive shell on a 200-column pseudo-terminal (``TERM=dumb``: the plain console, with
    the same prompt as ptpython) and type ``typed``, each line once the prompt is back."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    # rich takes a dumb terminal to be 80 columns wide unless COLUMNS and LINES say otherwise.
    env = {**env, "TERM": "dumb", "COLUMNS": "200", "LINES": "50"}
    shell = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdin=secondary,
                             stdout=secondary, stderr=secondary, start_new_session=True)  # fmt: skip
    os.close(secondary)
    screen, sent, deadline = "", 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                try:
                    screen += os.read(primary, 65536).decode(errors="replace")
                except OSError:  # the shell exited
                    break
            if sent < len(typed) and screen.count(" >>> ") > sent:  # the prompt is back: type the next line
                os.write(primary, typed[sent].encode() + b"\n")
                sent += 1
        shell.wait(timeout=30)
    finally:
        if shell.poll() is None:
            shell.kill()
        os.close(primary)
    return screen.replace("\r\n", "\n").splitlines()


def seed(data_dir: Path) -> None:
    """The quick start's first step: the example's tables and notes."""
    done = run_piped("litestar db run --file examples/seed.py", environment(data_dir))
    assert done[-1].startswith("committed"), done


def produce(steps: list[Step], data_dir: Path, seeded: Path | None = None) -> list[str]:
    """What running the block's commands prints, with ``$ command`` lines, as the README shows it.

    The databases start as ``seed`` leaves them: copied from ``seeded`` when given, else seeded here.
    """
    env = environment(data_dir)
    if seeded is None:
        seed(data_dir)
    else:
        shutil.copytree(seeded, data_dir)
    lines: list[str] = []
    for step in steps:
        lines.append(f"$ {step.command}")
        if step.typed:
            lines += run_on_terminal(step.command, step.typed, env)
        else:
            lines += run_piped(step.command, env)
    return lines


BLOCKS = transcripts()


def test_the_readme_has_transcripts() -> None:
    commands = [step.command.split()[:3] for steps in BLOCKS for step in steps]
    for name in ("binds", "check", "shell", "run", "console"):
        assert ["litestar", "db", name] in commands


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("seeded") / "data"
    seed(data_dir)
    return data_dir


@pytest.mark.parametrize("steps", BLOCKS, ids=[steps[0].command for steps in BLOCKS])
def test_transcript(steps: list[Step], tmp_path: Path, seeded: Path) -> None:
    data_dir = tmp_path / "data"
    expected = [f"$ {step.command}" if i == 0 else line for step in steps for i, line in
                enumerate([f"$ {step.command}", *step.expected])]  # fmt: skip
    actual = produce(steps, data_dir, seeded)
    assert normalise(actual, data_dir) == normalise(expected)


if __name__ == "__main__":
    import tempfile

    for steps in BLOCKS:
        with tempfile.TemporaryDirectory() as scratch:
            data = Path(scratch) / "data"
            output = produce(steps, data)
            print("```")
            print("\n".join(line.replace(str(data.parent), "…") for line in output))
            print("```\n")
