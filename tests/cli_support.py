"""What the trainer's CLI tests share: a tiny model's flags, a corpus file, and `run`, which calls
`tinygrad-rnn` in-process and insists that nothing it prints is a traceback."""
from tinygrad_rnn import cli
from tinygrad_rnn.text import builtin_text

TINY = ["--hidden", "16", "--seq-len", "8", "--batch-size", "4", "--no-progress"]


def write_corpus(tmp_path_factory, text=None, name="tiny.txt") -> str:
    """`text` (default: the first 4,000 characters of the built-in corpus) as a file; its path."""
    path = tmp_path_factory.mktemp("corpus") / name
    path.write_text(builtin_text()[:4000] if text is None else text, encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    """(exit code, stdout, stderr) of `tinygrad-rnn *argv`."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err
