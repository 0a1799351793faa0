"""`completion bash|zsh`: a shell completion script for d2sm's commands and flags, built from the
parser itself so it never falls behind."""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress import say

BASH = """# d2sm completion for bash: eval "$(d2sm completion bash)" (or save it in your completions dir)
_d2sm() {
    local cur command
    cur="${COMP_WORDS[COMP_CWORD]}"
    command=""
    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        case "$word" in -*) ;; *) command="$word"; break ;; esac
    done
    case "$command" in
%(cases)s
        *) COMPREPLY=($(compgen -W "%(commands)s %(global)s" -- "$cur")) ;;
    esac
}
complete -o default -F _d2sm d2sm
"""
BASH_CASE = """        %(name)s) COMPREPLY=($(compgen -W "%(words)s" -- "$cur")) ;;"""

ZSH = """#compdef d2sm
# d2sm completion for zsh: d2sm completion zsh > "${fpath[1]}/_d2sm" (then compinit)
_d2sm() {
    local -a commands
    commands=(
%(commands)s
    )
    if (( CURRENT == 2 )); then
        _describe 'command' commands
        return
    fi
    case "${words[2]}" in
%(cases)s
    esac
}
_d2sm "$@"
"""
ZSH_CASE = """        %(name)s) _arguments '*:file:_files' %(flags)s ;;"""


def subcommands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def zsh_specs(parser: argparse.ArgumentParser) -> list[str]:
    """_arguments specs: `--flag[help]` for a switch, `--flag[help]:value:` for one taking a value
    (its files completed when it names a path)."""
    specs = []
    for action in parser._actions:
        for option in (o for o in action.option_strings if o.startswith("--")):
            text = quote((action.help or "").replace("[", "(").replace("]", ")").split("(default")[0].strip())
            value = "" if action.nargs == 0 else (":path:_files" if action.type is Path else ":value:")
            specs.append(f"'{option}[{text}]{value}'")
    return sorted(specs)


def quote(text: str) -> str:
    """For inside single quotes in a shell script."""
    return text.replace("'", "'\\''")


def helps(root: argparse.ArgumentParser) -> dict[str, str]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def script(shell: str, root: argparse.ArgumentParser) -> str:
    commands = subcommands(root)
    if shell == "bash":
        cases = "\n".join(BASH_CASE % {"name": n, "words": " ".join(flags(p))} for n, p in commands.items())
        return BASH % {"cases": cases, "commands": " ".join(commands), "global": " ".join(flags(root))}
    descriptions = helps(root)
    listed = "\n".join(f"        '{n}:{quote(descriptions.get(n, '').replace(':', ' -'))}'" for n in commands)
    cases = "\n".join(ZSH_CASE % {"name": n, "flags": " ".join(zsh_specs(p))} for n, p in commands.items())
    return ZSH % {"commands": listed, "cases": cases}


def add_parser(commands, common) -> None:
    com = commands.add_parser("completion", help="print a bash or zsh completion script")
    com.add_argument("shell", choices=("bash", "zsh"))
    com.set_defaults(handler=run, json=False)


def run(args: argparse.Namespace) -> None:
    from .cli import parser

    say(script(args.shell, parser()).rstrip("\n"))
