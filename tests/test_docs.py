"""Every Python block in README.md and docs/*.md runs, and prints what its comments claim.

Blocks of one file share a namespace, top to bottom, like a reader pasting them in order. A
line `print(x)   # text` claims that `text` appears in what that block printed, after what
the block's earlier claims matched."""
import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_doc_code_blocks_run_and_print_what_they_claim(path):
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    namespace = {"__name__": f"doc_{path.stem}"}
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(path), "exec"), namespace)
        # claims are found in order, each after the previous one, so a claim cannot borrow
        # the text of an earlier line that happens to print the same thing
        printed, at = out.getvalue(), 0
        for claim in re.findall(r"^\s*print\(.*\)\s+# -> (.+)$", code, flags=re.M):
            found = printed.find(claim.strip(), at)
            assert found >= 0, (f"{path.name} claims {claim.strip()!r} (in order, after the claims "
                                f"before it); the block printed:\n{printed}")
            at = found + len(claim.strip())
