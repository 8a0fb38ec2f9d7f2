"""Every ```python block in docs/*.md runs, so the docs cannot drift.

The blocks of one page share a namespace and run in order, as a reader
would paste them into one notebook, in a fresh temporary working directory,
with `AISERVICE_KIT_DATA` pointing at the shared datasets so every fetcher
reads its cache and never the network. A traceback names the page and the
line of the Markdown file.

A block that needs what a test run cannot have (a GPU, a TPU, a cluster, a
server in another process) is preceded by the line `<!-- no-run -->`; use it
sparingly. Pages are collected when the tests are, so a new page is tested
without touching this file.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
NO_RUN = "<!-- no-run -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# A block that trains or exports takes seconds to minutes: `large`.
_SLOW = re.compile(r"\.fit\(|\btrain\(|export_|\.export\(")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first line (1-based), source."""

    language: str
    line: int
    source: str
    run: bool


def extract_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order.

    Args:
        text: Markdown source.

    Returns:
        One `Block` per fence, with the source dedented by the fence's own
        indentation and `run=False` when the last non-blank line before the
        fence is `<!-- no-run -->`.
    """
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].strip().split(" ")[0].strip("{}.")
        previous = [line for line in lines[:index] if line.strip()]
        run = not (previous and previous[-1].strip() == NO_RUN)
        body = []
        index += 1
        while index < len(lines):
            closing = lines[index].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(
                fence[0]
            ):
                break
            line = lines[index]
            if line.startswith(indent):
                line = line[len(indent) :]
            body.append(line)
            index += 1
        first_line = index - len(body) + 1  # 1-based, the body's first line
        blocks.append(Block(language, first_line, "\n".join(body) + "\n", run))
        index += 1
    return blocks


def _pages():
    params = []
    for path in sorted(DOCS.glob("*.md")):
        blocks = [
            block
            for block in extract_blocks(path.read_text(encoding="utf-8"))
            if block.language in ("python", "py")
        ]
        if not blocks:
            continue
        slow = any(_SLOW.search(block.source) for block in blocks if block.run)
        marks = [pytest.mark.large] if slow else []
        params.append(pytest.param(path, blocks, id=path.name, marks=marks))
    return params


def test_extract_blocks_reads_fences_markers_and_lines():
    text = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "a = 1",  # 3
            "```",  # 4
            NO_RUN,  # 5
            "",  # 6
            "```python",  # 7
            "needs_a_gpu()",  # 8
            "```",  # 9
            "- a list item:",  # 10
            "",  # 11
            "    ```bash",  # 12
            "    echo hi",  # 13
            "    ```",  # 14
        ]
    )
    blocks = extract_blocks(text)
    assert [(b.language, b.line, b.run) for b in blocks] == [
        ("python", 3, True),
        ("python", 8, False),
        ("bash", 13, True),
    ]
    assert blocks[0].source == "a = 1\n"
    assert blocks[2].source == "echo hi\n"


def test_every_page_with_python_is_collected():
    names = {param.id for param in _pages()}
    assert "getting-started.md" in names
    assert "data.md" in names


#: Runs one page's blocks in order in one namespace; argv: the page and a
#: JSON file of [line, source] pairs.
_RUNNER = """
import json, sys
page, blocks = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__docs__"}
for line, source in blocks:
    # Padding with newlines makes tracebacks point at the .md line.
    exec(compile("\\n" * (line - 1) + source, page, "exec"), namespace)
"""


@pytest.mark.parametrize(("page", "blocks"), _pages())
def test_page_snippets_run(page, blocks, data_dir, tmp_path):
    # Each page runs in a fresh interpreter, as a reader's notebook would:
    # TensorFlow's process-wide state (strategies, collectives) left by
    # other tests cannot leak into it.
    runnable = [[block.line, block.source] for block in blocks if block.run]
    if not runnable:
        pytest.skip(
            f"{page.name}: every block talks to a server in another process "
            f"(marked {NO_RUN}); tests/serving runs their clients"
        )
    listing = tmp_path / "blocks.json"
    listing.write_text(json.dumps(runnable))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = dict(os.environ)
    env["AISERVICE_KIT_DATA"] = str(data_dir)
    # Fetchers must not reach the network: an unreachable mirror makes a
    # cache miss fail at once instead of downloading.
    env["AISERVICE_KIT_DATA_MIRROR"] = "http://127.0.0.1:9/"
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(page), str(listing)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    if result.returncode:
        pytest.fail(
            f"{page.name} failed:\n{result.stderr[-4000:]}", pytrace=False
        )
