"""A small pflag/cobra work-alike: etcdctl's flag syntax, errors and usage text.

etcdctl is a cobra program: flags may come before, between or after the
positional arguments (``--limit 5``, ``--limit=5``, ``-w json``, ``-wjson``),
boolean flags take no value unless written ``--flag=false``, ``--`` ends the
flags, and the persistent (global) flags are read from ``ETCDCTL_<NAME>``
environment variables when not given on the command line. Errors are worded
as pflag words them, because scripts grep for them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from fastkv.cli.tabwriter import tabwrite as _tabwrite


class EnvConflict(Exception):
    """An ETCDCTL_* variable and its command-line flag were both given (etcdctl refuses)."""

    def __init__(self, variable: str, warnings: list[str] | None = None):
        super().__init__(f'conflicting environment variable "{variable}" is shadowed by corresponding '
                         "command-line flag (either unset environment variable or disable flag)")
        self.variable = variable
        self.warnings = warnings or []   # the warnings for the variables before it


class UsageError(Exception):
    """A flag the command line got wrong (pflag's wording); ``command`` is where it was found."""

    def __init__(self, message: str, command: "Command | None" = None):
        super().__init__(message)
        self.command = command


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3,
                   "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's Duration.String() for the defaults shown in usage (whole units only)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = ""
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    return out + f"{sec}s"


def _parse_int(text: str) -> int:
    """pflag's int flags: strconv.ParseInt(text, 0, 64) (0x10, 0o17, 0b1, 010, 1_000)."""
    from fastkv.cli.v2.gostd import NumError, parse_int, quote   # when an int flag is given
    try:
        return parse_int(text, 64)
    except NumError as e:
        why = "value out of range" if "range" in str(e) else "invalid syntax"
        raise ValueError(f"strconv.ParseInt: parsing {quote(text)}: {why}") from None


def _parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


@dataclass
class Flag:
    name: str
    kind: str  # bool, string, int, duration, strings
    default: Any
    usage: str
    short: str = ""

    def parse(self, text: str) -> Any:
        if self.kind == "bool":
            return _parse_bool(text)
        if self.kind == "int":
            return _parse_int(text)
        if self.kind == "duration":
            return parse_duration(text)
        if self.kind == "strings":
            return [p for p in text.split(",")]
        return text

    def default_text(self) -> str:
        if self.kind == "bool":
            return f"[={'true' if self.default else 'false'}]"
        if self.kind == "string":
            return f'="{self.default}"'
        if self.kind == "duration":
            return "=" + format_duration(self.default)
        if self.kind == "strings":
            return "=[" + ",".join(self.default) + "]"
        return f"={self.default}"

    def label(self) -> str:
        lead = f"  -{self.short}, " if self.short else "      "
        return f"{lead}--{self.name}{self.default_text()}"


@dataclass
class Command:
    name: str
    short: str
    usage: str
    run: Callable | None = None
    flags: list[Flag] = field(default_factory=list)
    subcommands: list["Command"] = field(default_factory=list)
    description: str = ""
    parent: "Command | None" = None
    # False for the commands etcdctl runs without building a client (version, help,
    # completion, snapshot status/restore): ETCDCTL_* variables are not read for them
    uses_env: bool = True
    env_names: tuple[str, ...] = ()   # other ETCDCTL_* variables it reads (no warning for them)

    def __post_init__(self):
        for sub in self.subcommands:
            sub.parent = self

    def path(self) -> str:
        return f"{self.parent.path()} {self.name}" if self.parent and self.parent.parent else self.name

    def sub(self, name: str) -> "Command | None":
        return next((c for c in self.subcommands if c.name == name), None)

    def walk(self):
        """This command's subcommands and theirs, depth first, sorted by name (cobra's order)."""
        for c in sorted(self.subcommands, key=lambda c: c.name):
            yield c
            yield from c.walk()


def tabwrite(text: str) -> str:
    """Go's text/tabwriter as etcdctl sets it up for usage (minwidth 0, tabwidth 8,
    padding 1, padded with tabs)."""
    return _tabwrite(text, minwidth=0, tabwidth=8, padding=1, pad_with_tabs=True)


def flag_rows(flags: list[Flag]) -> str:
    return "".join(f"{f.label()}\t{f.usage}\n" for f in sorted(flags, key=lambda f: f.name))


def usage_text(cmd: Command, global_flags: list[Flag], program: str, version: str = "",
               api_version: str = "", help_flag: bool = True) -> str:
    """etcdctl's usage template (pkg/cobrautl/help.go): NAME, USAGE, VERSION (the root),
    API VERSION and COMMANDS (every runnable command below, by path), DESCRIPTION,
    OPTIONS, GLOBAL OPTIONS; the whole text through one tabwriter."""
    # a flag a parent group defines too is the group's persistent flag (endpoint --cluster):
    # inherited, so shown with the global ones
    inherited = list(global_flags)
    up = cmd.parent
    while up is not None and up.parent is not None:
        inherited += [f for f in up.flags if f.name not in {g.name for g in inherited}]
        up = up.parent
    names = {f.name for f in inherited}
    local = [f for f in cmd.flags if f.name not in names]
    if help_flag:   # cobra adds -h to the command it runs (`help x` shows x's usage without it)
        local.append(Flag("help", "bool", False, f"help for {cmd.name}", "h"))
    if cmd.parent is None:
        local = global_flags + local
    parts = ["NAME:\n", f"\t{cmd.path()} - {cmd.short}\n", "\n", "USAGE:\n",
             f"\t{program} {cmd.usage}\n" if cmd.parent else f"\t{cmd.usage}\n"]
    if cmd.parent is None:
        parts += ["\nVERSION:\n", f"\t{version}\n"]
    if cmd.subcommands:
        parts += ["\nAPI VERSION:\n", f"\t{api_version}\n", "\n\nCOMMANDS:\n"]
        prefix = cmd.path() + " " if cmd.parent else ""
        parts += [f"\t{c.path()[len(prefix):]}\t{c.short}\n" for c in cmd.walk() if c.run is not None]
    if cmd.description:
        parts += ["\nDESCRIPTION:\n"] + [f"\t{line}\n" for line in cmd.description.strip("\n\t ").split("\n")]
    parts += ["\nOPTIONS:\n", flag_rows(local)]
    if cmd.parent:
        parts += ["\nGLOBAL OPTIONS:\n", flag_rows(inherited)]
    return tabwrite("".join(parts) + "\n")


@dataclass
class Parsed:
    command: Command
    args: list[str]
    values: dict[str, Any]
    given: set[str]
    env_warnings: list[str] = field(default_factory=list)
    env_conflict: "EnvConflict | None" = None   # reported, like the warnings, by the client


def parse(root: Command, global_flags: list[Flag], argv: list[str],
          env: dict[str, str] | None = None, env_prefix: str = "ETCDCTL") -> Parsed:
    """Find the command and parse flags the way cobra + pflag do.

    Raises UsageError(message) with pflag's wording, and LookupError(name) for an
    unknown top-level command.
    """
    return _parse(root, global_flags, argv, os.environ if env is None else env, env_prefix)


def _parse(root, global_flags, argv, env, env_prefix) -> Parsed:
    cmd = root
    values: dict[str, Any] = {f.name: f.default for f in global_flags}
    given: set[str] = set()
    positional: list[str] = []

    def flags_of(c: Command) -> dict[str, Flag]:
        table = {f.name: f for f in global_flags}
        table.update({f.name: f for f in c.flags})
        table["help"] = Flag("help", "bool", False, "", "h")
        return table

    def assign(flag: Flag, text: str, shown: str) -> None:
        try:
            value = flag.parse(text)
        except ValueError as e:
            raise UsageError(f'invalid argument "{text}" for "{shown}" flag: {e}', cmd) from None
        if flag.kind == "strings" and flag.name in given:
            value = values[flag.name] + value
        values[flag.name] = value
        given.add(flag.name)

    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--":
            positional.extend(argv[i:])
            break
        table = flags_of(cmd)
        if tok.startswith("--") and len(tok) > 2:
            name, eq, text = tok[2:].partition("=")
            flag = table.get(name)
            if flag is None:
                raise UsageError(f"unknown flag: --{name}", cmd)
            if flag.kind == "bool" and not eq:
                text = "true"
            elif not eq:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: --{name}", cmd)
                text = argv[i]
                i += 1
            assign(flag, text, f"--{name}")
        elif tok.startswith("-") and len(tok) > 1:
            shorts = tok[1:]
            while shorts:
                c, shorts = shorts[0], shorts[1:]
                flag = next((f for f in table.values() if f.short == c), None)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{c}' in {tok}", cmd)
                shown = f"-{c}, --{flag.name}"
                if flag.kind == "bool":
                    if shorts.startswith("="):
                        assign(flag, shorts[1:], shown)
                        shorts = ""
                    else:
                        assign(flag, "true", shown)
                    continue
                if shorts:
                    text = shorts[1:] if shorts.startswith("=") else shorts
                    shorts = ""
                elif i < len(argv):
                    text = argv[i]
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{c}' in -{c}", cmd)
                assign(flag, text, shown)
        else:
            if not positional and cmd.subcommands:
                sub = cmd.sub(tok)
                if sub is not None:
                    cmd = sub
                    continue
                if cmd is root:
                    raise LookupError(tok)
            positional.append(tok)

    for f in cmd.flags:
        values.setdefault(f.name, f.default)
    values.setdefault("help", False)
    warnings: list[str] = []
    conflict = None
    if cmd.uses_env and cmd.run is not None and not values["help"]:   # only a client reads them
        try:
            warnings = _read_env(cmd, global_flags, values, given, env, env_prefix)
        except EnvConflict as e:
            warnings, conflict = e.warnings, e
    return Parsed(cmd, positional, values, given, warnings, conflict)


def env_name(prefix: str, flag: str) -> str:
    return f"{prefix}_{flag.upper().replace('-', '_')}"


def _read_env(cmd, global_flags, values, given, env, env_prefix) -> list[str]:
    """etcdctl's SetPflagsFromEnv on the global flags: a non-empty variable sets a flag not
    given on the command line (a value that does not parse is ignored, as etcdctl ignores
    the error); then, in the environment's order, a variable whose flag was given stops
    the program (even an empty one), and any other unknown <PREFIX>_* gets a warning."""
    by_key = {env_name(env_prefix, f.name): f for f in global_flags}
    for key, f in by_key.items():
        if f.name not in given and env.get(key):
            try:
                values[f.name] = f.parse(env[key])
            except ValueError:
                pass
    warnings = []
    for key, val in env.items():
        f = by_key.get(key)
        if f is not None:
            if f.name in given:
                raise EnvConflict(key, warnings)
            continue
        if key.startswith(env_prefix + "_") and key not in cmd.env_names and key != env_prefix + "_API":
            warnings.append(f"unrecognized environment variable {key}={val}")
    return warnings
