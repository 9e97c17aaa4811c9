"""Every ``kgfact`` command and flag the README and docs/*.md name in code exists in the command
line's parser (:func:`kgfact.cli.parser`), so the docs cannot promise a flag kgfact lacks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgfact.cli import parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL = {"", "bash", "sh", "shell", "console"}  # the blocks whose lines are command lines
SPAN = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"(?:^|\s)kgfact\s+(.*)")
NAME = re.compile(r"[a-z][a-z0-9-]*")  # a sub-command; anything else stands for one
ROW = re.compile(r"\|\s*`kgfact\s+([^`]*)`\s*")  # a table row's first cell, a command


def command_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """Each ``kgfact ...`` command line the markdown shows in code, with its line number: a
    line of a shell block (without its ``#`` comment), an inline code span, and a table row
    whose first cell is a command (the row's code spans are that command's flags)."""
    for block in FENCE.finditer(markdown):
        first = markdown.count("\n", 0, block.start(2)) + 1
        lines = block[2].splitlines() if block[1] in SHELL else []
        for k, line in enumerate(lines):
            if k and lines[k - 1].endswith("\\"):
                continue  # already read as part of the command it continues
            for more in lines[k + 1:]:  # a backslash at the end: the command goes on
                if not line.endswith("\\"):
                    break
                line = line[:-1] + more
            if found := COMMAND.search(line.split(" #", 1)[0]):
                yield first + k, found[1]
    prose = FENCE.sub(lambda m: "\n" * m[0].count("\n"), markdown)  # keeps line numbers
    for number, line in enumerate(prose.splitlines(), 1):
        first, *cells = line.split(" | ")
        if found := ROW.fullmatch(first):
            yield number, " ".join([found[1], *(s for c in cells for s in SPAN.findall(c))])
    for span in SPAN.finditer(prose):
        if found := COMMAND.search(span[1].replace("\n", " ")):
            yield prose.count("\n", 0, span.start()) + 1, found[1]


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands of ``p`` by name (argparse keeps them, and each parser's flags in
    ``_option_string_actions``, only in attributes it does not document)."""
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)),
                {})


def problems(markdown: str, where: str = "") -> list[str]:
    """What the markdown's command lines name that the parser does not have, one line each."""
    top, found = parser(), []
    for number, line in command_lines(markdown):
        parsers, words, tokens = [top], ["kgfact"], line.replace("\\|", "|").split()
        while tokens and not tokens[0].startswith("-") and _subcommands(parsers[0]):
            names = tokens.pop(0).strip(".,;:()[]").split("|")
            if not all(NAME.fullmatch(n) for n in names):  # `kgfact COMMAND`, `kgfact <version>`
                parsers = []
                break
            missing = [n for n in names if not all(n in _subcommands(p) for p in parsers)]
            if missing:
                found.append(f"{where}:{number}: no command '{' '.join(words)} {missing[0]}'")
                parsers = []
                break
            words.append(names[0])
            parsers = [_subcommands(p)[n] for p in parsers for n in names]
        for token in tokens if parsers else ():
            flag = token.strip(".,;:()[]").split("=", 1)[0]
            if flag == "--":  # the end of options: what follows are file names
                break
            if flag.startswith("--") and not any(flag in p._option_string_actions
                                                  for p in parsers):
                found.append(f"{where}:{number}: '{' '.join(words)}' has no flag {flag}")
    return found


def test_a_made_up_command_or_flag_is_found():
    markdown = "\n".join([
        "Run `kgfact slick RUN --backend ray --no-such-flag 3` first.",
        "```bash",
        "kgfact build --relations P36 --run=runs/x   # a comment: --not-a-flag",
        "kgfact nosuch --help",
        "kgfact store start --empty --bogus",
        "kgfact store load -- --file-named-like-a-flag.nt",
        "kgfact finetune RUN --seeds 0,1 \\",
        "    --lr-grid 1e-3 --lr-grib 3e-3",
        "```",
        "```python",
        "subprocess.run(['kgfact', 'evaluate', RUN])  # not shell: kgfact evaluate --nope",
        "```",
        "| command | flags |",
        "| --- | --- |",
        "| `kgfact evaluate RUN` | `--sets`, `--modes`, `--made-up X` |",
        "| `kgfact store start\\|stop` | `--port`, `--empty` (start), `--nope` |",
        "`kgfact COMMAND --help` lists them, as `kgfact --help --no-such-option` does not;",
        "`kgfact <version>` is what it prints.",
    ])
    assert problems(markdown, "x.md") == [
        "x.md:4: no command 'kgfact nosuch'",
        "x.md:5: 'kgfact store start' has no flag --bogus",
        "x.md:7: 'kgfact finetune' has no flag --lr-grib",
        "x.md:15: 'kgfact evaluate' has no flag --made-up",
        "x.md:16: 'kgfact store start' has no flag --nope",
        "x.md:1: 'kgfact slick' has no flag --no-such-flag",
        "x.md:17: 'kgfact' has no flag --no-such-option",
    ]


def test_the_readme_table_names_every_stage():
    """The scan reads the README's command table, so the test below checks its flags."""
    lines = [line for _, line in command_lines((ROOT / "README.md").read_text())]
    with_flags = {line.split()[0] for line in lines if " --" in line}
    assert with_flags >= {"build", "slick", "ftsets", "finetune", "evaluate", "theory", "run"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_flag_the_docs_name_exists(doc):
    assert problems(doc.read_text(), doc.relative_to(ROOT).as_posix()) == []
