"""Every Python block in the README and the docs compiles and names only what it defines.

A page's blocks are read in order as one module, the way a reader follows them (a later
block may use what an earlier one defined or imported). Each block must compile (top-level
`await` and `async with` allowed, as in an asyncio REPL), and the page must use no name it
never defines or imports (ruff's F821), so a snippet cannot drift from the API or lose an
import unnoticed. A fragment may use the names a handler or a client script has in
hand (`CONTEXT`) without defining them.

These are the quick, static checks; `tests/integration/test_docs_run.py` runs every block
against a real server. Both read the blocks with `docs_blocks` (indented blocks included).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docs_blocks import PAGES, ROOT, blocks

pytestmark = pytest.mark.timeout(60)

CONTEXT = ("session", "client", "server", "config", "url", "payload")
"""What the guides' fragments stand inside: a handler's `session`, a client script's
`client` and `url`, a server's `config` and `server`, some `payload` bytes."""


def test_pages_have_blocks() -> None:
    assert sum(len(blocks(page)) for page in PAGES) > 40


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_compiles(page: Path) -> None:
    for block in blocks(page):
        try:
            compile(block.padded(), str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{block.name} (line {exc.lineno}): {exc}")


def test_no_block_uses_an_undefined_name(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    files = {}
    for page in PAGES:
        found = blocks(page)
        if found:
            name = str(page.relative_to(ROOT)).replace("/", "__").replace(".md", ".py")
            # Each block on its page's own lines, so ruff's line is the page's. Line 1 of a
            # page is its title, never code: the context names go there. Top-level await
            # is valid in the REPL the snippets assume; ruff parses it.
            lines = [""] * (found[-1].line + found[-1].source.count("\n"))
            lines[0] = " = ".join(CONTEXT) + " = ..."
            for block in found:
                for offset, line in enumerate(block.source.splitlines()):
                    lines[block.line - 1 + offset] = line
            (tmp_path / name).write_text("\n".join(lines) + "\n")
            files[name] = page
    done = subprocess.run(
        [ruff, "check", "--isolated", "--select", "F821", "--output-format", "json", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    problems = [
        f"{files[Path(item['filename']).name].relative_to(ROOT)}:{item['location']['row']}: "
        f"{item['message']}"
        for item in json.loads(done.stdout or "[]")
    ]
    assert not problems, "\n".join(problems)
