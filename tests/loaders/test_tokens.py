"""Token data: text through a model directory's tokenizer.json or bytes, pre-tokenised ids, the two-task set."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from neuronmap.errors import NeuronmapError
from neuronmap.loaders.tokens import TokenDataError, load_token_data, successor_tables, two_task


def _word_tokenizer(folder) -> None:
    """A word-level tokenizer.json built in-process (nothing downloaded): ids 0…5, unknown words → 0."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


def test_text_is_tokenised_with_the_model_directorys_tokenizer(tmp_path):
    model_dir, corpus = tmp_path / "model", tmp_path / "corpus"
    model_dir.mkdir(), corpus.mkdir()
    _word_tokenizer(model_dir)
    (corpus / "a.txt").write_text("the cat sat on the mat " * 10)  # 60 words
    (corpus / "sub").mkdir()
    (corpus / "sub" / "b.md").write_text("dog " * 20)  # unknown → 0
    (corpus / "skip.bin").write_bytes(b"\x00\xff")
    data = load_token_data(f"text:{corpus}", model_dir=model_dir, vocab_size=6, context=8, heldout=0.25)
    assert data.train.shape[1] == data.test.shape[1] == 8
    assert data.train.shape[0] + data.test.shape[0] == 80 // 8 and data.test.shape[0] == 2
    together = np.concatenate([data.train.numpy(), data.test.numpy()]).reshape(-1)
    assert np.bincount(together, minlength=6).tolist() == [20, 20, 10, 10, 10, 10]
    assert data.token(2) == "cat" and data.task_test is None


def test_a_model_without_tokenizer_reads_bytes_and_a_small_vocabulary_is_refused(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("héllo " * 40)
    data = load_token_data(f"text:{text}", model_dir=tmp_path, vocab_size=256, context=16, heldout=0.5)
    assert data.tokenizer.name == "bytes" and int(data.test.max()) < 256
    assert sorted(set(data.train.reshape(-1).tolist())) == sorted(set("héllo ".encode()))
    with pytest.raises(TokenDataError, match="no tokenizer.json and a vocabulary of 64"):
        load_token_data(f"text:{text}", model_dir=tmp_path, vocab_size=64, context=16)


def test_npz_ids_and_splits(tmp_path):
    ids = np.arange(60).reshape(10, 6) % 7
    np.savez(tmp_path / "ids.npz", ids=ids, task=np.arange(10) % 2)
    data = load_token_data(f"npz:{tmp_path / 'ids.npz'}", vocab_size=7, heldout=0.3, seed=1)
    assert data.test.shape == (3, 6) and data.train.shape == (7, 6)
    rows = {tuple(r) for r in np.concatenate([data.train.numpy(), data.test.numpy()])}
    assert rows == {tuple(r) for r in ids}
    assert data.task_names == ["task 0", "task 1"]
    np.savez(tmp_path / "split.npz", train=ids[:8], test=ids[8:])
    split = load_token_data(f"npz:{tmp_path / 'split.npz'}", vocab_size=7)
    np.testing.assert_array_equal(split.test.numpy(), ids[8:])
    with pytest.raises(TokenDataError, match="outside the model's vocabulary 0…5"):
        load_token_data(f"npz:{tmp_path / 'ids.npz'}", vocab_size=6)


def test_two_task_contexts_follow_their_task():
    nxt = successor_tables(16)
    ids, task = two_task(200, 12, 16, noise=0.0)
    assert (ids[:, 1:] == nxt[ids[:, :-1]]).all()
    assert ((ids % 2) == task[:, None]).all()
    odd_cycle = [1]
    while len(odd_cycle) < 8:
        odd_cycle.append(int(nxt[odd_cycle[-1]]))
    assert sorted(odd_cycle) == list(range(1, 16, 2)), "one cycle through every odd token"
    noisy, _ = two_task(200, 12, 16, noise=0.2)
    follows = (noisy[:, 1:] == nxt[noisy[:, :-1]]).mean()
    assert 0.75 < follows < 0.9  # 0.8 replaced-or-not, plus the replacements that hit the successor by chance
    data = load_token_data("two-task", vocab_size=16, context=12, n_contexts=50, heldout=0.2)
    assert data.test.shape == (10, 12) and data.task_names == ["count", "permute"]
    assert ((data.test % 2) == data.task_test[:, None]).all() and data.token(5) == "o5"
    again = load_token_data("two-task", vocab_size=16, context=12, n_contexts=50, heldout=0.2)
    assert (again.test == data.test).all(), "deterministic"


@pytest.mark.parametrize(
    "spec, vocab, message",
    [
        ("web:foo", 64, "is not one of text:PATH, npz:PATH, two-task"),
        ("text:/no/such/folder", 300, "does not exist"),
        ("npz:/no/such.npz", 64, "does not exist"),
        ("two-task", 63, "even and ≥ 4"),
    ],
)
def test_bad_specs_are_one_line_neuronmap_errors(spec, vocab, message):
    with pytest.raises(NeuronmapError, match=message) as error:
        load_token_data(spec, vocab_size=vocab)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["data", "tokenizer", "two_task"])
def test_docstring_examples(name):
    module = importlib.import_module(f"neuronmap.loaders.tokens.{name}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
