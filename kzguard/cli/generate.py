"""Everything generated and committed: man pages and shell completions (from the argparse
parser and SCHEMA) and the package lists in the hook files (from the managers' registry,
:mod:`kzguard.managers.hookfiles`).

``python -m kzguard.cli.generate`` writes ``man/kzguard.8``, ``man/kzguard.yaml.5``,
``completions/kzguard.bash``, ``completions/_kzguard`` and the hook files in place; the
committed files must equal this output (tests/test_manpages.py). Never imported by the hooks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

from kzguard import __version__
from kzguard.cli import build_parser

DATE = "2026-11-28"  # fixed, so the output does not change with the day it is generated
STATE_PATH = "/var/lib/kzguard/state.json"
CONFIG_PATH = "/etc/kzguard/kzguard.yaml"

HOOK_FILES = (
    (
        "Fedora, EL (dnf4)",
        "/usr/lib/python3*/site-packages/dnf-plugins/kzguard.py, /etc/dnf/plugins/kzguard.conf",
    ),
    ("Fedora (dnf5)", "/etc/dnf/libdnf5-plugins/actions.d/kzguard.actions"),
    ("Fedora, EL (kernel-install)", "/usr/lib/kernel/install.d/60-kzguard.install"),
    (
        "Debian, Ubuntu, Proxmox (apt)",
        "/etc/apt/apt.conf.d/80kzguard, /etc/kernel/postinst.d/kzguard",
    ),
    (
        "Arch (pacman)",
        "/usr/share/libalpm/hooks/05-kzguard-pre.hook, "
        "/usr/share/libalpm/hooks/95-kzguard-post.hook",
    ),
)


# --- walking the parser ------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> Optional[argparse._SubParsersAction]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order they were added."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    return [(name, helps.get(name, ""), child) for name, child in sub.choices.items()]


def _global_dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if a.option_strings}


def _options(parser: argparse.ArgumentParser, skip: set[str]) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and a.dest not in skip and a.help != argparse.SUPPRESS
    ]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar:
        return str(action.metavar)
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


# --- roff ----------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe in a roff line: backslashes, hyphens, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("`", "")
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def _opt_tp(action: argparse.Action) -> Iterator[str]:
    names = ", ".join(f"\\fB{_esc(name)}\\fR" for name in action.option_strings)
    meta = _metavar(action)
    yield ".TP"
    yield names + (f" \\fI{_esc(meta)}\\fR" if meta else "")
    yield _esc(action.help or "")


def _pos_tp(action: argparse.Action) -> Iterator[str]:
    yield ".TP"
    yield f"\\fI{_esc(_metavar(action))}\\fR"
    text = action.help or ""
    if action.choices:
        text += " (one of " + ", ".join(map(str, action.choices)) + ")"
    yield _esc(text)


def _usage(path: list[str], parser: argparse.ArgumentParser, skip: set[str]) -> str:
    parts = [f"\\fB{_esc(' '.join(path))}\\fR"]
    for action in _options(parser, skip):
        if action.dest == "help":
            continue
        meta = _metavar(action)
        name = action.option_strings[-1]
        parts.append(f"[\\fB{_esc(name)}\\fR" + (f" \\fI{_esc(meta)}\\fR]" if meta else "]"))
    for action in _positionals(parser):
        meta = f"\\fI{_esc(_metavar(action))}\\fR"
        parts.append(f"[{meta}]" if action.nargs == "?" else meta)
    return " ".join(parts)


def _command_section(
    path: list[str], helptext: str, parser: argparse.ArgumentParser, skip: set[str]
) -> Iterator[str]:
    children = _commands(parser)
    if children:
        for name, child_help, child in children:
            yield from _command_section([*path, name], child_help, child, skip)
        return
    yield ".SS " + _esc(" ".join(path[1:]))
    yield _usage(path, parser, skip | {"help"})
    yield ".PP"
    yield _esc(helptext)
    for action in _positionals(parser):
        yield from _pos_tp(action)
    for action in _options(parser, skip | {"help"}):
        yield from _opt_tp(action)


def _header(name: str, section: str, title: str) -> list[str]:
    return [
        f'.\\" Generated by python -m kzguard.cli.generate from {title}; do not edit.',
        f'.TH {name.upper()} {section} "{DATE}" "kzguard {__version__}" "kzguard"',
    ]


def render_kzguard8() -> str:
    parser = build_parser()
    top = _global_dests(parser)
    lines = _header("kzguard", "8", "the argparse parser in kzguard/cli/commands.py")
    lines += [
        ".SH NAME",
        "kzguard \\- " + _esc(parser.description or ""),
        ".SH SYNOPSIS",
        "\\fBkzguard\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _esc(
            "kzguard judges every installed and pending kernel against the installed OpenZFS, "
            "refuses package-manager transactions that would install a kernel the ZFS module "
            "cannot load on, checks the module after a kernel is installed and keeps the boot "
            "default on a kernel that can import the pools."
        ),
        ".SH OPTIONS",
        _esc("Accepted before and after the command."),
    ]
    for action in _options(parser, set()):
        lines += _opt_tp(action)
    lines += [".SH COMMANDS"]
    for name, helptext, child in _commands(parser):
        lines += _command_section(["kzguard", name], helptext, child, top)
    lines += [
        ".SH EXIT STATUS",
        ".TP",
        "0",
        _esc("check: every judged kernel is safe; other commands: success."),
        ".TP",
        "1",
        _esc("check: a kernel is unsafe or unknown; hook: the transaction is refused."),
        ".TP",
        "2",
        _esc("usage or configuration error."),
        ".TP",
        "3",
        _esc("internal error."),
        ".SH FILES",
        ".TP",
        _esc(CONFIG_PATH),
        _esc("the configuration, see kzguard.yaml(5)."),
        ".TP",
        _esc(STATE_PATH),
        _esc("pins, one-shot overrides, recorded boot defaults and events."),
    ]
    for distro, files in HOOK_FILES:
        for path in files.split(", "):
            lines += [".TP", _esc(path), _esc(f"a package-manager hook on {distro}.")]
    lines += [
        ".TP",
        _esc("/usr/lib/systemd/system/kzguard.service"),
        _esc("the service (kzguard daemon)."),
        ".SH SEE ALSO",
        ".BR kzguard.yaml (5),",
        ".BR zfs (8),",
        ".BR dkms (8),",
        ".BR dnf (8),",
        ".BR apt (8),",
        ".BR pacman (8),",
        ".BR alpm\\-hooks (5),",
        ".BR systemctl (1)",
    ]
    return "\n".join(lines) + "\n"


def render_kzguard_yaml5() -> str:
    from kzguard.config import SCHEMA
    from kzguard.config.docs import _flow

    lines = _header("kzguard.yaml", "5", "SCHEMA in kzguard/config/schema.py")
    lines += [
        ".SH NAME",
        "kzguard.yaml \\- configuration of kzguard(8)",
        ".SH SYNOPSIS",
        _esc(CONFIG_PATH),
        ".SH DESCRIPTION",
        _esc(
            f"kzguard reads {CONFIG_PATH} inside the root it works on (--root), or the host "
            "file --config names. When the file does not exist, or is empty, every key has its "
            "default. The file is one YAML mapping; a dotted key below is a nested mapping "
            "(snapshots.keep is keep: indented under snapshots:)."
        ),
        ".PP",
        _esc(
            "The file is validated when it is loaded: an unknown key, a wrong type, a value "
            "outside its choices, a duplicate key or a syntax error names the file, the line "
            "and the key, and makes every command exit with status 2. Kernel versions in "
            "zfs_ranges must be quoted: YAML reads 6.10 as the number 6.1."
        ),
        ".SH KEYS",
    ]
    for setting in SCHEMA:
        kind = setting.type
        if isinstance(setting.check, tuple):
            kind = "one of " + ", ".join(setting.check)
        lines += [
            ".TP",
            f"\\fB{_esc(setting.name)}\\fR ({_esc(kind)}, default "
            f"\\fB{_esc(_flow(setting.default))}\\fR)",
            _esc(setting.doc),
        ]
    lines += [
        ".SH FILES",
        ".TP",
        _esc(CONFIG_PATH),
        _esc("this file."),
        ".TP",
        _esc(STATE_PATH),
        _esc("the state kzguard keeps (not configuration)."),
        ".SH SEE ALSO",
        ".BR kzguard (8)",
    ]
    return "\n".join(lines) + "\n"


# --- completions ---------------------------------------------------------------------------------


def _tree(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, list[str], list[str]]]:
    """(path, subcommands, options) for the parser and every subcommand parser."""
    children = _commands(parser)
    options = sorted(name for a in _options(parser, set()) for name in a.option_strings)
    yield path, [name for name, _, _ in children], options
    for name, _, child in children:
        yield from _tree(child, f"{path} {name}".strip())


def render_bash() -> str:
    cases = []
    for path, subs, options in _tree(build_parser()):
        words = " ".join([*subs, *options])
        cases.append(f'        "{path}") words="{words}" ;;')
    case_text = "\n".join(cases)
    return f"""\
# bash completion for kzguard; generated by python -m kzguard.cli.generate, do not edit.
_kzguard() {{
    local cur path="" word i words=""
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            -*) continue ;;
        esac
        case "${{COMP_WORDS[i-1]}}" in
            --root|--config|--kernel|--zfs-version|--reason|--interval|--debounce|--bus) continue ;;
        esac
        if _kzguard_has "${{path:+$path }}$word"; then
            path="${{path:+$path }}$word"
        fi
    done
    case "${{COMP_WORDS[COMP_CWORD-1]}}" in
        --root) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "$path" in
{case_text}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
_kzguard_has() {{
    case "$1" in
{chr(10).join(f'        "{p}") return 0 ;;' for p, _, _ in _tree(build_parser()) if p)}
    esac
    return 1
}}
complete -F _kzguard kzguard
"""


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")


def render_zsh() -> str:
    parser = build_parser()
    funcs: list[str] = []

    def visit(p: argparse.ArgumentParser, fname: str) -> None:
        specs = []
        for action in _options(p, set()):
            helptext = _zsh_quote(action.help or "")
            meta = ":" + _zsh_quote(_metavar(action)) + ":" if action.nargs != 0 else ""
            if action.dest == "root" and meta:
                meta += "_files -/"
            elif action.dest == "config" and meta:
                meta += "_files"
            for name in action.option_strings:
                specs.append(f"'*{name}[{helptext}]{meta}'")
        children = _commands(p)
        if children:
            items = " ".join(f"'{_zsh_quote(n)}:{_zsh_quote(h)}'" for n, h, _ in children)
            specs.append(f"'1: :(({items}))'".replace("'(", "(").replace("))'", "))"))
            body = (
                "    local line state\n    _arguments -C \\\n        "
                + " \\\n        ".join(specs[:-1])
                + " \\\n        '1:command:->cmd' \\\n        '*::arg:->args'\n"
                + "    case $state in\n"
                + "        cmd)\n            local -a cmds\n            cmds=(\n"
                + "".join(
                    f"                '{_zsh_quote(n)}:{_zsh_quote(h)}'\n" for n, h, _ in children
                )
                + "            )\n            _describe command cmds ;;\n"
                + "        args)\n            case $line[1] in\n"
                + "".join(
                    f"                {n}) {fname}_{n.replace('-', '_')} ;;\n"
                    for n, _, _ in children
                )
                + "            esac ;;\n    esac\n"
            )
            for n, _, c in children:
                visit(c, f"{fname}_{n.replace('-', '_')}")
        else:
            for action in _positionals(p):
                values = " ".join(map(str, action.choices)) if action.choices else ""
                specs.append(f"':{_zsh_quote(_metavar(action))}:({values})'")
            body = "    _arguments \\\n        " + " \\\n        ".join(specs) + "\n"
        funcs.append(f"{fname}() {{\n{body}}}\n")

    visit(parser, "_kzguard")
    return (
        "#compdef kzguard\n# zsh completion for kzguard; generated by"
        " python -m kzguard.cli.generate, do not edit.\n\n"
        + "\n".join(reversed(funcs))
        + '\n_kzguard "$@"\n'
    )


def _hook_file(rel: str) -> Callable[[], str]:
    """A hook file of the source tree with its package lists from the managers' registry."""

    def render() -> str:
        from kzguard.managers import hookfiles

        source = Path(__file__).resolve().parents[2] / rel
        return hookfiles.render(rel, source.read_text(encoding="utf-8"))

    return render


def _outputs() -> dict[str, Callable[[], str]]:
    from kzguard.managers import hookfiles

    outputs: dict[str, Callable[[], str]] = {
        "man/kzguard.8": render_kzguard8,
        "man/kzguard.yaml.5": render_kzguard_yaml5,
        "completions/kzguard.bash": render_bash,
        "completions/_kzguard": render_zsh,
    }
    outputs.update({rel: _hook_file(rel) for rel in hookfiles.FILES})
    return outputs


OUTPUTS = _outputs()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kzguard.cli.generate")
    ap.add_argument(
        "--top", default=".", help="write man/, completions/ and hooks/ under this directory"
    )
    args = ap.parse_args(argv)
    for rel, render in OUTPUTS.items():
        target = Path(args.top) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(), encoding="utf-8")
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
