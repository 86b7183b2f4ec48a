"""The README's Python example runs and prints what its comments say."""
import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_and_print_what_they_claim():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {})
        # a comment like `# Tensor(0.7456, ...)` after a print must match the printed line
        for claim in re.findall(r"print\(.*?\)\s+# (Tensor\(.*)", code):
            assert claim in out.getvalue(), f"README claims {claim!r}, the code printed {out.getvalue()!r}"
