"""``fastkvctl completion bash|zsh``: a shell completion script made from the command table.

etcdctl 3.5 has this command (cobra's; Debian's 3.4 build has it too); its
scripts call the program back (``etcdctl __complete ...``) at every Tab. The
scripts here are self-contained instead: the command tree, every command's
flags, which flags take a value and the values a few of them accept are
written into the script when it is generated, so completing needs no process.
The help texts are etcdctl's. Only bash and zsh are offered (not fish or
powershell, which Debian's etcdctl also lists).

The completion is registered for the name fastkvctl was started as
(``fastkvctl`` when run as ``python -m fastkv.cli``).
"""
from __future__ import annotations

import os
import sys

from fastkv.cli import flags as fl

__all__ = ["COMPLETION_COMMAND", "bash_script", "zsh_script"]

# values a flag accepts, offered after it
FLAG_VALUES = {
    "write-out": ["fields", "json", "protobuf", "simple", "table"],
    "load": ["s", "m", "l", "xl"],
    "consistency": ["l", "s"],
    "order": ["ASCEND", "DESCEND"],
    "sort-by": ["CREATE", "KEY", "MODIFY", "VALUE", "VERSION"],
}


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def program_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name.endswith(".py") or name.startswith("python") or name == "-c":
        return "fastkvctl"
    return name


def _tree():
    """[(path, command)] for the root and every command below it, in cobra's order."""
    root = _main().ROOT
    return [("", root)] + [(c.path(), c) for c in root.walk()]


def _value_words(flags: list[fl.Flag]) -> list[str]:
    words = []
    for f in sorted(flags, key=lambda f: f.name):
        if f.kind != "bool":
            words.append(f"--{f.name}")
            if f.short:
                words.append(f"-{f.short}")
    return words


def _help_flag() -> fl.Flag:
    return fl.Flag("help", "bool", False, "help for this command", "h")


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _fn(prog: str) -> str:
    return "_" + "".join(ch if ch.isalnum() else "_" for ch in prog)


def _case(fn_name: str, rows: list[tuple[str, list[str]]], shell: str) -> str:
    """A function printing, for a command path ($1), its words (one per line in zsh)."""
    sep = "\n" if shell == "zsh" else " "
    lines = [f"{fn_name}() {{", '    case "$1" in']
    for path, words in rows:
        if words:
            text = sep.join(words)
            lines.append(f"        {_sh_quote(path)}) printf '%s\\n' {_sh_quote(text)} ;;")
    lines += ["    esac", "}"]
    return "\n".join(lines)


def _tables(prog: str, shell: str, descriptions: bool):
    main = _main()
    tree = _tree()
    fn = _fn(prog)
    global_flags = main.GLOBAL_FLAGS

    def described(words_and_usage: list[tuple[str, str]]) -> list[str]:
        if shell == "zsh":
            out = []
            for word, usage in words_and_usage:
                word = word.replace(":", "\\:")
                out.append(f"{word}:{usage.replace(chr(10), ' ')}" if descriptions and usage else word)
            return out
        return [w for w, _ in words_and_usage]

    subs, flags, values = [], [], []
    for path, cmd in tree:
        children = sorted(cmd.subcommands, key=lambda c: c.name)
        subs.append((path, described([(c.name, c.short) for c in children])))
        own = (global_flags if cmd.parent is None else cmd.flags + global_flags) + [_help_flag()]
        pairs = []
        for f in sorted(own, key=lambda f: f.name):
            pairs.append((f"--{f.name}", f.usage))
            if f.short:
                pairs.append((f"-{f.short}", f.usage))
        flags.append((path, described(pairs)))
        values.append((path, _value_words(own)))
    value_rows = [(f"--{name}", words) for name, words in FLAG_VALUES.items()]
    value_rows += [("-w", FLAG_VALUES["write-out"])]
    return "\n\n".join([
        _case(f"{fn}_subcommands", subs, shell),
        _case(f"{fn}_flags", flags, shell),
        _case(f"{fn}_value_flags", values, "bash"),
        _case(f"{fn}_flag_values", value_rows, "bash"),
    ])


# The walk over the words before the cursor, shared by both shells: ``look`` is the command
# path whose subcommands and flags are offered (help's arguments name a command path from
# the top again); a flag that takes a value is skipped with it. (Not ``path``: zsh ties
# that name to $PATH.)
_WALK = """    local look="" seen="" word skip=0 i
    for ((i = {first}; i < {cword}; i++)); do
        word="${{{words}[i]}}"
        if ((skip)); then skip=0; continue; fi
        case "$word" in
            --) break ;;
            -*=*) ;;
            -*) {fn}_has "$({fn}_value_flags "$look")" "$word" && skip=1 ;;
            *)
                if {fn}_has "$({fn}_subcommands "$look" | cut -d: -f1)" "$word"; then
                    look="${{look:+$look }}$word"
                    seen="${{seen:+$seen }}$word"
                    [[ "$seen" == help ]] && look=""
                fi ;;
        esac
    done
"""

_HAS = """{fn}_has() {{
    # is $2 one of the words (separated by spaces or newlines) of $1?
    local nl=$'\\n'   # zsh does not expand $'\\n' inside "${{...}}"
    local list="$nl${{1// /$nl}}$nl"
    [[ "$list" == *$'\\n'"$2"$'\\n'* ]]
}}"""


def bash_script(prog: str) -> str:
    fn = _fn(prog)
    return f"""# bash completion for {prog}                                    -*- shell-script -*-
# generated by `{prog} completion bash`; load it with: source <({prog} completion bash)

{_tables(prog, "bash", False)}

{_HAS.format(fn=fn)}

{fn}_complete() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev=""
    ((COMP_CWORD > 1)) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
{_WALK.format(first=1, cword="COMP_CWORD", words="COMP_WORDS", fn=fn)}
    local values
    values="$({fn}_flag_values "$prev")"
    if [[ -n "$values" ]] && {fn}_has "$({fn}_value_flags "$look")" "$prev"; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$({fn}_flags "$look")" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$({fn}_subcommands "$look")" -- "$cur"))
    fi
}}

complete -o default -F {fn}_complete {prog}
"""


def zsh_script(prog: str, descriptions: bool = True) -> str:
    fn = _fn(prog)
    return f"""#compdef {prog}
# zsh completion for {prog}, generated by `{prog} completion zsh`
# load it with: source <({prog} completion zsh)
# or save it as _{prog} in a directory of $fpath

{_tables(prog, "zsh", descriptions)}

{_HAS.format(fn=fn)}

{fn}() {{
    local cur="${{words[CURRENT]}}" prev="${{words[CURRENT-1]}}"
{_WALK.format(first=2, cword="CURRENT", words="words", fn=fn)}
    local -a candidates
    local values
    values="$({fn}_flag_values "$prev")"
    if [[ -n "$values" ]] && {fn}_has "$({fn}_value_flags "$look")" "$prev"; then
        candidates=(${{=values}})
        compadd -a candidates
    elif [[ "$cur" == -* ]]; then
        candidates=("${{(@f)$({fn}_flags "$look")}}")
        _describe -t flags 'flag' candidates
    else
        candidates=("${{(@f)$({fn}_subcommands "$look")}}")
        [[ -n "$candidates" ]] && _describe -t commands 'command' candidates || _files
    fi
}}

if [[ "${{funcstack[1]}}" == "{fn}" ]]; then
    {fn} "$@"
else
    compdef {fn} {prog}
fi
"""


def cmd_completion_bash(ctx, args: list[str], v: dict) -> int:
    ctx.stdout.write(bash_script(program_name()).encode())
    return 0


def cmd_completion_zsh(ctx, args: list[str], v: dict) -> int:
    ctx.stdout.write(zsh_script(program_name(), not v["no-descriptions"]).encode())
    return 0


_BASH_HELP = """
Generate the autocompletion script for the bash shell.

This script depends on the 'bash-completion' package.
If it is not installed already, you can install it via your OS's package manager.

To load completions in your current shell session:

\tsource <(etcdctl completion bash)

To load completions for every new session, execute once:

#### Linux:

\tetcdctl completion bash > /etc/bash_completion.d/etcdctl

#### macOS:

\tetcdctl completion bash > $(brew --prefix)/etc/bash_completion.d/etcdctl

You will need to start a new shell for this setup to take effect.
"""

_ZSH_HELP = """
Generate the autocompletion script for the zsh shell.

If shell completion is not already enabled in your environment you will need
to enable it.  You can execute the following once:

\techo "autoload -U compinit; compinit" >> ~/.zshrc

To load completions in your current shell session:

\tsource <(etcdctl completion zsh); compdef _etcdctl etcdctl

To load completions for every new session, execute once:

#### Linux:

\tetcdctl completion zsh > "${fpath[1]}/_etcdctl"

#### macOS:

\tetcdctl completion zsh > $(brew --prefix)/share/zsh/site-functions/_etcdctl

You will need to start a new shell for this setup to take effect.
"""


def _no_descriptions() -> fl.Flag:
    return fl.Flag("no-descriptions", "bool", False, "disable completion descriptions")


COMPLETION_COMMAND = fl.Command(
    "completion", "Generate the autocompletion script for the specified shell", "completion [flags]",
    uses_env=False,
    description="Generate the autocompletion script for etcdctl for the specified shell.\n"
                "See each sub-command's help for details on how to use the generated script.\n",
    subcommands=[
        fl.Command("bash", "Generate the autocompletion script for bash", "completion bash", cmd_completion_bash,
                   [_no_descriptions()], description=_BASH_HELP, uses_env=False),
        fl.Command("zsh", "Generate the autocompletion script for zsh", "completion zsh [flags]", cmd_completion_zsh,
                   [_no_descriptions()], description=_ZSH_HELP, uses_env=False),
    ])
