"""Issue 23, items 2, 3, 5 and 7 (temperature): word-level models and sampling from the command
line, end to end, and default primes a vocabulary can encode. Runs `cli.main` in-process."""
import json
import re

import pytest

from cli_support import TINY, run, write_corpus
from tinygrad_rnn import cli
from tinygrad_rnn.models import charlm, sampling
from tinygrad_rnn.text import builtin_text



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory, ("ROMEO: my deeds are done.\nJULIET: and mine, too.\n" * 40)
                        + builtin_text()[:6000], "play.txt")


@pytest.fixture(scope="module")
def word_run(corpus, tmp_path_factory):
    """A word-level run trained through the CLI, sampling along the way (--sample-every)."""
    out = tmp_path_factory.mktemp("word") / "run"
    code = cli.main(["train", "--corpus", corpus, "--level", "word", "--max-vocab", "200", "--steps", "6",
                     "--eval-every", "3", "--sample-every", "2", "--out", str(out), *TINY])
    return code, out


def test_word_level_trains_through_the_cli_and_samples_along_the_way(word_run):
    code, out = word_run
    assert code == 0  # was 2: the final sample's prime "\n" holds no word
    assert charlm.load_model(out / "last.npz")[2]["step"] == 6


def test_word_level_eval_sample_beam_top_k_and_resume(word_run, corpus, capsys):
    _, out = word_run
    ckpt = out / "last.npz"
    code, stdout, _ = run(capsys, "eval", "--checkpoint", ckpt, "--json")
    assert code == 0 and json.loads(stdout)["perplexity"] > 1
    for extra in ([], ["--top-k", "5"], ["--temperature", "0"], ["--beam", "3"], ["--beam", "2", "--prime", ""]):
        code, stdout, err = run(capsys, "sample", "--checkpoint", ckpt, "--length", "5", *extra)
        assert code == 0, (extra, err)
        assert len(stdout.split()) >= 5, (extra, stdout)
    code, stdout, _ = run(capsys, "sample", "--checkpoint", ckpt, "--prime", "ROMEO:", "--length", "4")
    assert code == 0 and stdout.startswith("ROMEO: ") and not re.match(r"ROMEO:\S", stdout)
    code, _, err = run(capsys, "train", "--corpus", corpus, "--out", out, "--resume", "--steps", "8", "--no-progress")
    assert code == 0, err
    assert charlm.load_model(ckpt)[2]["step"] == 8


def test_viz_hidden_on_a_word_model_has_one_column_per_word(word_run, tmp_path, capsys):
    _, out = word_run
    code, stdout, _ = run(capsys, "viz", "hidden", "--checkpoint", out / "last.npz", "--text", "romeo: my deeds",
                          "--out", tmp_path / "h.png")
    # 4 words (romeo, :, my, deeds), not the 15 characters of the text
    assert code == 0 and "over 4 words" in stdout, stdout


def test_viz_hidden_reports_the_file_it_wrote(word_run, tmp_path, capsys):
    _, out = word_run
    code, stdout, _ = run(capsys, "viz", "hidden", "--checkpoint", out / "last.npz", "--text", "my deeds are",
                          "--out", tmp_path / "plot")
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'plot.png'}:") and (tmp_path / "plot.png").is_file()
    code, stdout, _ = run(capsys, "viz", "hidden", "--checkpoint", out / "last.npz", "--text", "my deeds are",
                          "--out", tmp_path)
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'hidden.png'}:") and (tmp_path / "hidden.png").is_file()


def test_a_corpus_without_a_newline_trains_and_samples_without_a_prime(tmp_path, capsys):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text(builtin_text()[:8000].replace("\n", " "), encoding="utf-8")
    code, stdout, err = run(capsys, "train", "--corpus", corpus, "--steps", "3", "--out", tmp_path / "r", *TINY)
    assert code == 0, err  # was 2 at the final sample: '\n' not in the vocabulary
    assert "sample:" in stdout
    code, stdout, err = run(capsys, "sample", "--checkpoint", tmp_path / "r" / "last.npz", "--length", "10")
    assert code == 0, err
    assert stdout.startswith(" ") and len(stdout) >= 11  # the default prime: a space


def test_default_prime_is_in_every_vocabulary():
    from tinygrad_rnn.text import Vocab

    assert sampling.default_prime(Vocab.from_text("ab\nc")) == "\n"
    assert sampling.default_prime(Vocab.from_text("ab c")) == " "
    assert sampling.default_prime(Vocab.from_text("abc")) == "a"
    assert sampling.default_prime(Vocab.from_text("to be. or not", "word")) == "."
    word = Vocab.from_text("to be or not", "word")
    assert len(word.encode(sampling.default_prime(word))) == 1


@pytest.mark.parametrize("argv,says", [
    (["--beam", "-1"], "beam_search: beam width must be a whole number from 1 to 1000, got -1"),
    (["--beam", "1001"], "beam_search: beam width must be a whole number from 1 to 1000, got 1001"),
    (["--temperature", "-1"], "sample: temperature must be a finite number >= 0 (0 is greedy), got -1.0"),
    (["--temperature", "nan"], "sample: temperature must be a finite number >= 0 (0 is greedy), got nan"),
    (["--top-k", "-2"], "sample: top_k must be a whole number >= 0 (0 or None: every token), got -2"),
    (["--length", "-5"], "sample: length must be a whole number >= 0, got -5"),
])
def test_sampling_options_that_would_hang_or_invert_are_refused(word_run, capsys, argv, says):
    _, out = word_run
    code, stdout, err = run(capsys, "sample", "--checkpoint", out / "last.npz", *argv)
    assert (code, stdout, err) == (2, "", f"error: {says}\n")
