"""Every transcript in the README is what the real command prints.

A transcript is a fenced block without a language whose first line starts with ``$ ``. Each block runs
on a freshly seeded copy of the example app's databases (``litestar db run --file examples/seed.py``),
its commands in order, through ``bash`` as a user types them, with output piped. A command followed by
prompt lines (``... >>> code``) is an interactive shell: it runs on a pseudo-terminal and gets the code
typed in. A block preceded by ``<!-- transcript: NAME -->`` runs in a directory prepared by
``tests.readme_setups.NAME`` instead (an app of its own, say with Alembic migrations). Paths, timings
and the SQLite version are normalised, and table borders and column padding are ignored (they follow
the width of the paths); every word must match.

``python -m tests.test_readme`` prints each block's real output, for updating the README.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

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


@dataclass
class Transcript:
    steps: list[Step]
    setup: str | None = None
    """A function of tests/readme_setups.py that prepares the directory, for blocks not about the example."""


def transcripts() -> list[Transcript]:
    blocks = re.findall(
        r"^(?:<!-- transcript: (\w+) -->\n)?```\n(\$ .*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL
    )
    found = []
    for setup, block in blocks:
        steps: list[Step] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            else:
                steps[-1].expected.append(line)
        found.append(Transcript(steps, setup or None))
    return found


def normalise(lines: list[str], data_dir: Path | None = None) -> list[str]:
    text = "\n".join(lines).replace("\r", "")
    if data_dir is not None:
        text = text.replace(str(data_dir.parent), "…")
    text = re.sub(r"\d+(?:\.\d+)? ms\b", "<ms>", text)
    text = re.sub(r'"(\w+_ms|age_s)":\d+(?:\.\d+)?', r'"\1":<n>', text)
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


def run_piped(command: str, env: dict[str, str], cwd: Path = ROOT) -> list[str]:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False, timeout=120)  # fmt: skip
    return done.stdout.splitlines()


def run_on_terminal(command: str, typed: list[str], env: dict[str, str], cwd: Path = ROOT) -> list[str]:
    """Run an interactive shell on a 200-column pseudo-terminal (``TERM=dumb``: the plain console, with
    the same prompt as ptpython) and type ``typed``, each line once the prompt is back."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    # rich takes a dumb terminal to be 80 columns wide unless COLUMNS and LINES say otherwise.
    env = {**env, "TERM": "dumb", "COLUMNS": "200", "LINES": "50"}
    shell = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=secondary,
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


def produce(transcript: Transcript, data_dir: Path, seeded: Path | None = None) -> list[str]:
    """What running the block's commands prints, with ``$ command`` lines, as the README shows it.

    The databases start as ``seed`` leaves them: copied from ``seeded`` when given, else seeded here.
    A block with a set-up runs in ``data_dir`` as that set-up leaves it instead.
    """
    env, cwd = environment(data_dir), ROOT
    with contextlib.ExitStack() as stack:
        port = 8000
        if transcript.setup is not None:
            from tests import readme_setups

            data_dir.mkdir(parents=True)
            env.update(getattr(readme_setups, transcript.setup)(data_dir), PYTHONPATH=str(ROOT))
            cwd = data_dir
            if transcript.setup in readme_setups.SERVED:
                port = stack.enter_context(serving(env, cwd))
        elif seeded is None:
            seed(data_dir)
        else:
            shutil.copytree(seeded, data_dir)
        lines: list[str] = []
        for step in transcript.steps:
            lines.append(f"$ {step.command}")
            command = step.command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if step.typed:
                lines += run_on_terminal(command, step.typed, env, cwd)
            else:
                lines += run_piped(command, env, cwd)
        return lines


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[int]:
    """``uvicorn app:app`` on a free local port, until the block is done."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    server = subprocess.Popen([str(BIN / "uvicorn"), "app:app", "--port", str(port), "--log-level", "warning"],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


BLOCKS = transcripts()


def test_the_readme_has_transcripts() -> None:
    commands = [step.command.split()[:3] for block in BLOCKS for step in block.steps]
    for name in ("binds", "check", "shell", "run", "console"):
        assert ["litestar", "db", name] in commands


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("seeded") / "data"
    seed(data_dir)
    return data_dir


@pytest.mark.parametrize("transcript", BLOCKS, ids=[block.steps[0].command for block in BLOCKS])
def test_transcript(transcript: Transcript, tmp_path: Path, seeded: Path) -> None:
    data_dir = tmp_path / "data"
    expected = [line for step in transcript.steps for line in (f"$ {step.command}", *step.expected)]
    actual = produce(transcript, data_dir, seeded)
    assert normalise(actual, data_dir) == normalise(expected)


if __name__ == "__main__":
    import tempfile

    for block in BLOCKS:
        with tempfile.TemporaryDirectory() as scratch:
            data = Path(scratch) / "data"
            output = produce(block, data)
            print("```")
            print("\n".join(line.replace(str(data.parent), "…") for line in output))
            print("```\n")
