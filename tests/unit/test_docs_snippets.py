"""Every Python block in the README and the docs compiles and names only what it defines.

A page's blocks are read in order as one module, the way a reader follows them (a later
block may use what an earlier one defined or imported). Each block must compile (top-level
`await` and `async with` allowed, as in an asyncio REPL), and the page must use no name it
never defines or imports (ruff's F821), so a snippet cannot drift from the API or lose an
import unnoticed. A fragment may use the names a handler or a client script has in
hand (`CONTEXT`) without defining them.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CONTEXT = ("session", "client", "server", "config", "url", "payload")
"""What the guides' fragments stand inside: a handler's `session`, a client script's
`client` and `url`, a server's `config` and `server`, some `payload` bytes."""


def blocks(page: Path) -> list[str]:
    return list(_BLOCK.findall(page.read_text()))


def test_pages_have_blocks() -> None:
    assert sum(len(blocks(page)) for page in PAGES) > 40


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_compiles(page: Path) -> None:
    for number, block in enumerate(blocks(page), 1):
        try:
            compile(block, f"{page.name}#{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{page.name}, block {number}: {exc}")


def test_no_block_uses_an_undefined_name(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    files = {}
    for page in PAGES:
        found = blocks(page)
        if found:
            name = str(page.relative_to(ROOT)).replace("/", "__").replace(".md", ".py")
            # Top-level await is valid in the REPL the snippets assume; ruff parses it.
            preamble = " = ".join(CONTEXT) + " = ...\n\n"
            (tmp_path / name).write_text(preamble + "\n\n".join(found))
            files[name] = page
    done = subprocess.run(
        [ruff, "check", "--isolated", "--select", "F821", "--output-format", "json", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    problems = [
        f"{files[Path(item['filename']).name].relative_to(ROOT)}: {item['message']}"
        for item in json.loads(done.stdout or "[]")
    ]
    assert not problems, "\n".join(problems)
