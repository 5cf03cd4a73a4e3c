"""fastkvctl's ``help [command]``: cobra's help command as etcdctl has it.

``help lease grant`` prints what ``lease grant --help`` prints; a path that names no
command gets ``Unknown help topic [`x`]`` on stderr and the top-level usage (exit 0).
"""
from __future__ import annotations

import sys

from fastkv.cli import flags as fl

__all__ = ["HELP_COMMAND"]


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def _go_backquote(s: str) -> str:
    """%#q of one string: back-quoted when Go can (strconv.CanBackquote), else %q."""
    if "`" not in s and all(ch == "\t" or (ch.isprintable() and ch != "\ufeff") for ch in s):
        return f"`{s}`"
    from fastkv.cli.v2.gostd import quote
    return quote(s)


def find(root: fl.Command, args: list[str]) -> fl.Command | None:
    """cobra's Find: follow the words that name subcommands; a top-level word that names
    none is an unknown command (None)."""
    cmd = root
    for i, word in enumerate(args):
        sub = cmd.sub(word) if not word.startswith("-") else None
        if sub is None:
            if cmd is root and cmd.subcommands:
                return None
            break
        cmd = sub
    return cmd


def cmd_help(ctx, args: list[str], v: dict) -> int:
    m = _main()
    cmd = find(m.ROOT, args)
    if cmd is None:
        sys.stderr.write("Unknown help topic [" + " ".join(_go_backquote(a) for a in args) + "]\n")
        sys.stderr.flush()
        ctx.stdout.write(m.usage(m.ROOT, help_flag=False).encode())   # (cobra has not given it -h)
        return 0
    ctx.stdout.write(m.usage(cmd).encode())
    return 0


HELP_COMMAND = fl.Command(
    "help", "Help about any command", "help [command] [flags]", cmd_help, uses_env=False,
    description="Help provides help for any command in the application.\n"
                "Simply type etcdctl help [path to command] for full details.")
