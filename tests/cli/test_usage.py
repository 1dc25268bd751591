"""Usage errors of the real `deid-node` command: one `Error:` line on stderr and exit 1,
as every other error (the README's promise), never a boxed message."""

from __future__ import annotations

import subprocess

import pytest

from deid_node.testing.loopback import deid_node_command


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*deid_node_command(), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("audit", "--limit", "x"), "Invalid value for '--limit'"),
        (("audit", "--bogus"), "No such option: --bogus"),
        (("no-such-command",), "No such command 'no-such-command'"),
        (("users", "add"), "Missing argument"),
    ],
)
def test_a_usage_error_is_one_error_line_and_exit_1(args: tuple[str, ...], says: str) -> None:
    done = _run(*args)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0]
    assert "╭" not in done.stderr and "│" not in done.stderr


def test_help_and_a_bare_group_still_print_their_help_and_exit_0() -> None:
    for args in (("--help",), ("audit", "--help"), ("users",), ()):
        done = _run(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage: deid-node" in done.stdout
        assert "Error" not in done.stderr


def test_help_shows_square_brackets_as_written() -> None:
    # Help text is plain text: "[web]" is the config table, not rich markup.
    done = _run("web", "--help")
    assert "[web] host and port" in " ".join(done.stdout.split())
