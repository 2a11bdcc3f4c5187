"""The README is the manual: it starts with the two set-up commands and documents every command."""
from pathlib import Path

import typer
from typer.main import get_command

from tuneloop.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)
        else:
            yield " ".join(path)


def test_readme_opens_with_make_demo_and_make_test():
    text = README.read_text()
    head = text[: text.index("## ")]
    assert "make demo" in head and "make test" in head


def test_every_cli_command_is_documented_in_the_readme():
    text = README.read_text()
    commands = sorted(_commands(get_command(app)))
    assert len(commands) > 20
    missing = [c for c in commands if f"tuneloop {c}" not in text]
    assert not missing, f"commands missing from README.md: {missing}"
