"""A small urfave/cli v1 (1.22) work-alike: etcdctl v2's flag syntax, errors and help.

etcdctl's v2 mode is an urfave/cli App on top of Go's ``flag`` package, and
scripts depend on its quirks, so they are reproduced here:

- ``-flag`` and ``--flag`` are the same; ``-flag=value`` or ``-flag value``;
  a bool flag takes a value only as ``-flag=false``; ``--`` ends the flags.
- Global flags stop at the first argument that is not a flag (the command).
- A command's own flags are first *reordered* (urfave's ``reorderArgs``): every
  argument naming one of the command's flags moves to the front, together with
  the argument after it when that is not a flag itself; unknown ``-x`` words
  stay positional. Then Go's flag parser runs, stopping at the first positional.
- Two spellings of one flag (``-r`` and ``--recursive``) given together:
  "Cannot use two forms of the same flag".
- Errors are Go's ("flag provided but not defined: -x", "invalid value "abc"
  for flag -ttl: parse error") with "Incorrect Usage" and the help text on
  stdout, then the error alone on stderr (ctlv2.Start), exit status 1.
- Help is rendered from urfave's templates through a Go ``text/tabwriter``.

Control flow follows urfave: a command action returns an error value (or None);
``os.Exit`` anywhere is :class:`OsExit`, caught by the program's ``main``.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any, Callable

from fastkv.cli.tabwriter import tabwrite as _tabwrite
from fastkv.cli.v2 import gostd


class OsExit(Exception):
    """os.Exit(code): leave now (output already written)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class ExitError(Exception):
    """cli.NewExitError: printed on stderr by HandleExitCoder, then exit ``code``."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message = message
        self.code = code


class FlagError(Exception):
    """An error from Go's flag parser or urfave's normalizeFlags (printed as is)."""


# -- flags ---------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """cli.BoolFlag / StringFlag / IntFlag / DurationFlag / StringSliceFlag.

    ``name`` is urfave's "long, short" list; ``value`` the default (a duration in ns).
    """
    kind: str          # bool, string, int, duration, stringslice
    name: str
    usage: str = ""
    value: Any = None
    hidden: bool = False

    def names(self) -> list[str]:
        return [n.strip() for n in self.name.split(",")]

    def __str__(self) -> str:
        """stringifyFlag: the help line (the tab separates name and usage columns)."""
        placeholder, usage = _unquote_usage(self.usage)
        if self.kind == "stringslice":
            return _prefixed_names(self.name, placeholder or "value") + "\t" + usage.strip()
        default = ""
        needs_placeholder = self.kind != "bool"
        if self.kind == "string":
            default = f" (default: {gostd.quote(self.value)})" if self.value else ""
        elif self.kind == "int":
            default = f" (default: {self.value or 0})"
        elif self.kind == "duration":
            default = f" (default: {gostd.format_duration(self.value or 0)})"
        if needs_placeholder and not placeholder:
            placeholder = "value"
        return _prefixed_names(self.name, placeholder) + "\t" + (usage + default).strip()


def BoolFlag(name: str, usage: str = "", hidden: bool = False) -> Flag:
    return Flag("bool", name, usage, False, hidden)


def StringFlag(name: str, value: str = "", usage: str = "") -> Flag:
    return Flag("string", name, usage, value)


def IntFlag(name: str, value: int = 0, usage: str = "") -> Flag:
    return Flag("int", name, usage, value)


def DurationFlag(name: str, value_ns: int = 0, usage: str = "") -> Flag:
    return Flag("duration", name, usage, value_ns)


def StringSliceFlag(name: str, usage: str = "") -> Flag:
    return Flag("stringslice", name, usage, ())


HELP_FLAG = BoolFlag("help, h", "show help")
VERSION_FLAG = BoolFlag("version, v", "print the version")


def _unquote_usage(usage: str) -> tuple[str, str]:
    i = usage.find("`")
    if i >= 0:
        j = usage.find("`", i + 1)
        if j >= 0:
            name = usage[i + 1:j]
            return name, usage[:i] + name + usage[j + 1:]
    return "", usage


def _prefixed_names(full: str, placeholder: str) -> str:
    parts = [n.strip() for n in full.split(",")]
    out = []
    for name in parts:
        s = ("-" if len(name) == 1 else "--") + name
        if placeholder:
            s += " " + placeholder
        out.append(s)
    return ", ".join(out)


class _Value:
    """One Go flag.Value (every spelling of a flag has its own, as in Go)."""

    def __init__(self, kind: str, default: Any):
        self.kind = kind
        self.value = list(default) if kind == "stringslice" else default

    def set(self, text: str) -> None:
        if self.kind == "bool":
            self.value = gostd.parse_bool(text)
        elif self.kind == "int":
            self.value = gostd.parse_int(text)
        elif self.kind == "duration":
            try:
                self.value = gostd.parse_duration(text)
            except ValueError:
                raise gostd.NumError("parse error") from None
        elif self.kind == "stringslice":
            self.value.append(text)
        else:
            self.value = text


class FlagSet:
    """Go's flag.FlagSet with ContinueOnError (its messages, not its output)."""

    def __init__(self, flags: list[Flag]):
        self.formal: dict[str, _Value] = {}
        for f in flags:
            for n in f.names():
                self.formal[n] = _Value(f.kind, f.value)
        self.actual: dict[str, _Value] = {}
        self.args: list[str] = []

    def parse(self, arguments: list[str]) -> None:
        self.args = list(arguments)
        while self._parse_one():
            pass

    def _parse_one(self) -> bool:
        if not self.args:
            return False
        s = self.args[0]
        if len(s) < 2 or s[0] != "-":
            return False
        minuses = 1
        if s[1] == "-":
            minuses = 2
            if len(s) == 2:
                self.args = self.args[1:]
                return False
        name = s[minuses:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {s}")
        self.args = self.args[1:]
        has_value, value = False, ""
        eq = name.find("=", 1)
        if eq > 0:
            name, value, has_value = name[:eq], name[eq + 1:], True
        flag = self.formal.get(name)
        if flag is None:
            # "help"/"h" are always defined by urfave, so Go's ErrHelp never shows
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if has_value:
                try:
                    flag.set(value)
                except ValueError as e:
                    raise FlagError(f"invalid boolean value {gostd.quote(value)} for -{name}: {e}") from None
            else:
                flag.set("true")
        else:
            if not has_value and self.args:
                value, self.args, has_value = self.args[0], self.args[1:], True
            if not has_value:
                raise FlagError(f"flag needs an argument: -{name}")
            try:
                flag.set(value)
            except ValueError as e:
                raise FlagError(f"invalid value {gostd.quote(value)} for flag -{name}: {e}") from None
        self.actual[name] = flag
        return True

    def lookup(self, name: str) -> _Value | None:
        return self.formal.get(name)


def normalize_flags(flags: list[Flag], fs: FlagSet) -> None:
    """urfave's normalizeFlags: one flag given under two names is an error; else the
    value given under one name is copied to the other names."""
    for f in flags:
        parts = f.names()
        if len(parts) == 1:
            continue
        first = None
        first_name = ""
        for name in parts:
            if name in fs.actual:
                if first is not None:
                    raise FlagError(f"Cannot use two forms of the same flag: {name} {first_name}")
                first, first_name = fs.formal[name], name
        if first is None:
            continue
        for name in parts:
            if name not in fs.actual and first.kind != "stringslice":
                fs.formal[name].value = first.value


def _arg_is_flag(flags: list[Flag], arg: str) -> bool:
    if arg in ("-", "--") or not arg.startswith("-"):
        return False
    if arg.startswith("--"):
        arg = arg.replace("-", "", 2)
    if arg.startswith("-"):
        arg = arg.replace("-", "", 1)
    arg = arg.split("=")[0]
    return any(arg == n for f in flags for n in f.names())


def reorder_args(flags: list[Flag], args: list[str]) -> list[str]:
    """urfave's reorderArgs: known flags (and a value after each) first."""
    remaining: list[str] = []
    reordered: list[str] = []
    next_may_be_value = False
    for i, arg in enumerate(args):
        if next_may_be_value and not _arg_is_flag(flags, arg):
            next_may_be_value = False
            reordered.append(arg)
        elif arg == "--":
            remaining = ["--"] + remaining + args[i + 1:]
            break
        elif _arg_is_flag(flags, arg):
            reordered.append(arg)
            next_may_be_value = "=" not in arg
        else:
            remaining.append(arg)
    return reordered + remaining


# -- commands, apps, contexts ----------------------------------------------------

Action = Callable[["Context"], "Exception | None"]


@dataclass
class Command:
    name: str
    usage: str = ""
    args_usage: str = ""
    description: str = ""
    flags: list[Flag] = field(default_factory=list)
    action: Action | None = None
    subcommands: list["Command"] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    help_name: str = ""
    hide_help: bool = False
    hidden: bool = False

    def names(self) -> list[str]:
        return [self.name] + list(self.aliases)

    def has_name(self, name: str) -> bool:
        return name in self.names()

    def visible_flags(self) -> list[Flag]:
        return [f for f in self.flags if not f.hidden]

    def run(self, ctx: "Context") -> Exception | None:
        """Command.Run."""
        if self.subcommands:
            return self._start_app(ctx)
        me = dataclasses.replace(self)
        if not me.hide_help:
            me.flags = me.flags + [HELP_FLAG]
        fs = FlagSet(me.flags)
        err: Exception | None = None
        try:
            fs.parse(reorder_args(me.flags, ctx.args()[1:]))
            normalize_flags(me.flags, fs)
        except FlagError as e:
            err = e
        context = Context(ctx.app, fs, ctx, me)
        if err is not None:
            ctx.app.out(f"Incorrect Usage: {err}\n\n")
            show_command_help(context, me.name)
            return err
        if check_command_help(context, me.name):
            return None
        action = me.action or help_subcommand_action
        err = action(context)
        if err is not None:
            handle_exit_coder(context, err)
        return err

    def _start_app(self, ctx: "Context") -> Exception | None:
        """Command.startApp: a command with subcommands runs as an App of its own."""
        parent = ctx.app
        app = App(name=f"{parent.name} {self.name}", io=parent.io)
        app.help_name = app.name if self.help_name else self.help_name
        app.usage = self.usage
        app.description = self.description
        app.args_usage = self.args_usage
        app.commands = [dataclasses.replace(c) for c in self.subcommands]
        app.flags = list(self.flags)
        app.hide_help = self.hide_help
        app.version = parent.version
        app.hide_version = parent.hide_version
        app.categories = list(app.commands)
        app.action = self.action or help_subcommand_action
        return app.run_as_subcommand(ctx)


class IO:
    """Where the program writes: ``out``/``err`` are binary streams."""

    def __init__(self, stdout, stderr, stdin=None):
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin

    @staticmethod
    def _write(stream, text: str) -> None:
        if isinstance(stream, io.TextIOBase):
            stream.write(text)
        else:
            stream.write(gostd.to_bytes(text))

    def out(self, text: str) -> None:
        self._write(self.stdout, text)

    def err(self, text: str) -> None:
        self.stdout.flush()
        self._write(self.stderr, text)
        self.stderr.flush()


@dataclass
class App:
    name: str
    io: IO
    help_name: str = ""
    usage: str = ""
    usage_text: str = ""
    args_usage: str = ""
    version: str = ""
    description: str = ""
    commands: list[Command] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    hide_help: bool = False
    hide_version: bool = False
    action: Action | None = None
    categories: list[Command] = field(default_factory=list)
    version_printer: Callable[["Context"], None] | None = None

    def out(self, text: str) -> None:
        self.io.out(text)

    def command(self, name: str) -> Command | None:
        for c in self.commands:
            if c.has_name(name):
                return c
        return None

    def visible_flags(self) -> list[Flag]:
        return [f for f in self.flags if not f.hidden]

    def _append_flag(self, flag: Flag) -> None:
        if flag not in self.flags:
            self.flags.append(flag)

    def setup(self) -> None:
        """App.Setup."""
        for c in self.commands:
            if not c.help_name:
                c.help_name = f"{self.help_name} {c.name}"
        if self.command("help") is None and not self.hide_help:
            self.commands.append(dataclasses.replace(HELP_COMMAND))
            self._append_flag(HELP_FLAG)
        if not self.version:
            self.hide_version = True
        if not self.hide_version:
            self._append_flag(VERSION_FLAG)
        self.categories = list(self.commands)

    def run(self, arguments: list[str]) -> Exception | None:
        """App.Run(os.Args): arguments[0] is the program name."""
        self.setup()
        fs = FlagSet(self.flags)
        err: Exception | None = None
        nerr: Exception | None = None
        try:
            fs.parse(arguments[1:])
        except FlagError as e:
            err = e
        try:
            normalize_flags(self.flags, fs)
        except FlagError as e:
            nerr = e
        context = Context(self, fs, None)
        if nerr is not None:
            self.out(f"{nerr}\n")
            show_app_help(context)
            return nerr
        if err is not None:
            self.out(f"Incorrect Usage. {err}\n\n")
            show_app_help(context)
            return err
        if not self.hide_help and _check_flag(context, HELP_FLAG):
            show_app_help(context)
            return None
        if not self.hide_version and _check_flag(context, VERSION_FLAG):
            (self.version_printer or _print_version)(context)
            return None
        args = context.args()
        if args:
            c = self.command(args[0])
            if c is not None:
                return c.run(context)
        action = self.action or help_action
        err = action(context)
        handle_exit_coder(context, err)
        return err

    def run_as_subcommand(self, ctx: "Context") -> Exception | None:
        """App.RunAsSubcommand."""
        if self.commands and self.command("help") is None and not self.hide_help:
            self.commands.append(dataclasses.replace(HELP_COMMAND))
            self._append_flag(HELP_FLAG)
        for c in self.commands:
            if not c.help_name:
                c.help_name = f"{self.help_name} {c.name}"
        fs = FlagSet(self.flags)
        err: Exception | None = None
        nerr: Exception | None = None
        try:
            fs.parse(ctx.args()[1:])
        except FlagError as e:
            err = e
        try:
            normalize_flags(self.flags, fs)
        except FlagError as e:
            nerr = e
        context = Context(self, fs, ctx)
        if nerr is not None:
            self.out(f"{nerr}\n\n")
            if self.commands:
                show_subcommand_help(context)
            else:
                show_command_help(ctx, (context.args() or [""])[0])
            return nerr
        if err is not None:
            self.out(f"Incorrect Usage. {err}\n\n")
            show_subcommand_help(context)
            return err
        if self.commands:
            if check_subcommand_help(context):
                return None
        elif check_command_help(ctx, (context.args() or [""])[0]):
            return None
        args = context.args()
        if args:
            c = self.command(args[0])
            if c is not None:
                return c.run(context)
        err = (self.action or help_action)(context)
        handle_exit_coder(context, err)
        return err


class Context:
    """cli.Context: this level's flags, its app, its parent, its command."""

    def __init__(self, app: App, fs: FlagSet, parent: "Context | None", command: Command | None = None):
        self.app = app
        self.flag_set = fs
        self.parent = parent
        self.command = command or Command("")

    def args(self) -> list[str]:
        return list(self.flag_set.args)

    # local lookups (Go re-parses the flag's String(); the value is already typed here)
    def _get(self, name: str, fs: FlagSet | None = None):
        v = (fs or self.flag_set).lookup(name)
        return None if v is None else v.value

    def bool(self, name: str) -> bool:
        return bool(self._get(name))

    def string(self, name: str) -> str:
        v = self._get(name)
        return "" if v is None else v

    def int(self, name: str) -> int:
        return self._get(name) or 0

    def string_slice(self, name: str) -> list[str]:
        return list(self._get(name) or [])

    def _global_set(self, name: str) -> FlagSet | None:
        ctx = self.parent if self.parent is not None else self
        while ctx is not None:
            if ctx.flag_set.lookup(name) is not None:
                return ctx.flag_set
            ctx = ctx.parent
        return None

    def global_bool(self, name: str) -> bool:
        fs = self._global_set(name)
        return bool(self._get(name, fs)) if fs else False

    def global_string(self, name: str) -> str:
        fs = self._global_set(name)
        return (self._get(name, fs) or "") if fs else ""

    def global_duration(self, name: str) -> int:
        fs = self._global_set(name)
        return (self._get(name, fs) or 0) if fs else 0

    @property
    def io(self) -> IO:
        return self.app.io


def handle_exit_coder(context: Context, err: Exception | None) -> None:
    if isinstance(err, ExitError):
        if err.message:
            context.io.err(err.message + "\n")
        raise OsExit(err.code)


def _check_flag(c: Context, flag: Flag) -> bool:
    return any(c.global_bool(n) or c.bool(n) for n in flag.names())


def check_command_help(c: Context, name: str) -> bool:
    if c.bool("h") or c.bool("help"):
        show_command_help(c, name)
        return True
    return False


def check_subcommand_help(c: Context) -> bool:
    if c.bool("h") or c.bool("help"):
        show_subcommand_help(c)
        return True
    return False


def _print_version(c: Context) -> None:
    c.app.out(f"{c.app.name} version {c.app.version}\n")


# -- help ------------------------------------------------------------------------

def help_action(c: Context) -> Exception | None:
    args = c.args()
    if args:
        return show_command_help(c, args[0])
    show_app_help(c)
    return None


def help_subcommand_action(c: Context) -> Exception | None:
    args = c.args()
    if args:
        return show_command_help(c, args[0])
    return show_subcommand_help(c)


HELP_COMMAND = Command("help", "Shows a list of commands or help for one command", "[command]",
                       action=help_action, aliases=["h"])


def _command_rows(commands: list[Command]) -> str:
    return "".join(f"\n   {', '.join(c.names())}\t{c.usage}" for c in commands if not c.hidden)


def show_app_help(c: Context) -> None:
    """AppHelpTemplate."""
    a = c.app
    flags = a.visible_flags()
    if a.usage_text:
        usage = a.usage_text
    else:
        usage = (f"{a.help_name} {'[global options]' if flags else ''}"
                 f"{' command [command options]' if a.commands else ''} {a.args_usage or '[arguments...]'}")
    t = f"NAME:\n   {a.name}{' - ' + a.usage if a.usage else ''}\n\nUSAGE:\n   {usage}"
    if a.version and not a.hide_version:
        t += f"\n\nVERSION:\n   {a.version}"
    if a.description:
        t += f"\n\nDESCRIPTION:\n   {a.description}"
    if any(not cmd.hidden for cmd in a.commands):
        t += "\n\nCOMMANDS:" + _command_rows(a.categories)
    if flags:
        t += "\n\nGLOBAL OPTIONS:\n   " + "\n   ".join(str(f) for f in flags)
    a.out(tabwrite(t + "\n"))


def _command_help_text(cmd: Command) -> str:
    """CommandHelpTemplate."""
    flags = cmd.visible_flags()
    usage = (f"{cmd.help_name}{' [command options]' if flags else ''} "
             f"{cmd.args_usage or '[arguments...]'}")
    t = f"NAME:\n   {cmd.help_name} - {cmd.usage}\n\nUSAGE:\n   {usage}"
    if cmd.description:
        t += f"\n\nDESCRIPTION:\n   {cmd.description}"
    if flags:
        t += "\n\nOPTIONS:\n   " + "".join(f"{f}\n   " for f in flags)
    return t + "\n"


def _subcommand_help_text(a: App) -> str:
    """SubcommandHelpTemplate."""
    flags = a.visible_flags()
    usage = (a.usage_text or f"{a.help_name} command{' [command options]' if flags else ''} "
             f"{a.args_usage or '[arguments...]'}")
    t = (f"NAME:\n   {a.help_name} - {a.description or a.usage}\n\nUSAGE:\n   {usage}\n\n"
         f"COMMANDS:{_command_rows(a.categories)}")
    if flags:
        t += "\n\nOPTIONS:\n   " + "".join(f"{f}\n   " for f in flags)
    return t + "\n"


def show_command_help(ctx: Context, command: str) -> Exception | None:
    if command == "":
        ctx.app.out(tabwrite(_subcommand_help_text(ctx.app)))
        return None
    for c in ctx.app.commands:
        if c.has_name(command):
            ctx.app.out(tabwrite(_command_help_text(c)))
            return None
    return ExitError(f"No help topic for '{command}'", 3)


def show_subcommand_help(c: Context) -> Exception | None:
    return show_command_help(c, c.command.name)


def tabwrite(text: str) -> str:
    """Go's text/tabwriter (flags 0, minwidth 1, padding 2, padded with spaces)."""
    return _tabwrite(text, minwidth=1, padding=2)
