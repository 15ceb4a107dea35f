"""The Python blocks of the README and the docs, as the test suite reads them.

Shared by `tests/unit/test_docs_snippets.py` (every block compiles and names only what
its page defines) and `tests/integration/test_docs_run.py` (every block runs against a
real server). Both import it as `docs_blocks`: pytest puts `tests/` on `sys.path` for
the root `tests/conftest.py` (the default `prepend` import mode), as it does `tests/unit/`
for `wire.py`.

A block is a fenced ```` ```python ```` block, also one indented inside a list item (its
indentation is removed). A block that cannot run in a test is marked in the page by an
HTML comment on the line before its fence, `<!-- snippet: not-run (reason) -->`; the
reason is required, so a page says why and the run test can count such blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# The closing fence must have the opening fence's indentation, so a block inside a list
# item ends at its own fence.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M
)
_MARKER = re.compile(r"<!--\s*snippet:")
_NOT_RUN = re.compile(r"^\s*<!-- snippet: not-run \((?P<reason>\S.*)\) -->\s*$")


@dataclass(frozen=True)
class Block:
    """One Python block of a page.

    Attributes:
        page: The Markdown file.
        number: Its position among the page's Python blocks, from 1.
        line: The page's line (from 1) of the block's first line of code.
        source: The code, without the indentation of an indented block.
        not_run: The reason of a `<!-- snippet: not-run (reason) -->` marker, or None.
    """

    page: Path
    number: int
    line: int
    source: str
    not_run: str | None

    @property
    def name(self) -> str:
        """`page#number`, the page relative to the repository."""
        return f"{self.page.relative_to(ROOT)}#{self.number}"

    def padded(self, source: str | None = None) -> str:
        """Return the code (or `source`) preceded by blank lines up to its place in the page.

        Compiled with the page as its file name, a traceback or a syntax error then
        names the page's own line.

        Args:
            source: The code to place (the block's, rewritten); the block's own by default.

        Returns:
            The code, starting at line `self.line`.
        """
        return "\n" * (self.line - 1) + (self.source if source is None else source)


def blocks(page: Path) -> list[Block]:
    """Return a page's Python blocks in order.

    Args:
        page: A Markdown file.

    Returns:
        Its blocks.

    Raises:
        ValueError: A `<!-- snippet: ... -->` marker is malformed (no reason given) or
            does not stand directly before a Python block.
    """
    text = page.read_text()
    lines = text.splitlines()
    found: list[Block] = []
    markers_used: set[int] = set()
    for match in _FENCE.finditer(text):
        fence_line = text.count("\n", 0, match.start())  # 0-based index of the fence
        indent = match["indent"]
        body = "".join(
            line.removeprefix(indent) for line in match["body"].splitlines(keepends=True)
        )
        not_run = None
        before = fence_line - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0 and _MARKER.search(lines[before]):
            marker = _NOT_RUN.match(lines[before])
            if marker is None:
                raise ValueError(
                    f"{page.name}:{before + 1}: write the marker as "
                    "`<!-- snippet: not-run (reason) -->`, with the reason"
                )
            not_run = marker["reason"]
            markers_used.add(before)
        found.append(Block(page, len(found) + 1, fence_line + 2, body, not_run))
    for index, line in enumerate(lines):
        if _MARKER.search(line) and index not in markers_used:
            raise ValueError(f"{page.name}:{index + 1}: a snippet marker not before a python block")
    return found
