"""Token contexts for the transformer assessments (methods.md §11.1), with no database involved.

``load_token_data(spec, ...)`` reads one of

- ``text:PATH``: a UTF-8 text file, or a folder of ``*.txt``/``*.md`` files (sorted, recursively), tokenised as one
  stream and cut into non-overlapping contexts of ``context`` tokens;
- ``npz:PATH``: pre-tokenised ids, ``ids`` (n, L), or ``train`` and ``test``; optional ``task`` labels (n,) or
  ``task_train``/``task_test``;
- ``two-task``: the generated two-task sequence data set (``two_task``), labelled by task.

The contexts are shuffled with ``seed`` and the last ``heldout`` fraction is the held-out split the assessments
score (a file's own ``train``/``test`` are kept as they are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from neuronmap.loaders.tokens.errors import TokenDataError
from neuronmap.loaders.tokens.tokenizer import NamedTokenizer, Tokenizer, load_tokenizer
from neuronmap.loaders.tokens.two_task import TASKS, two_task

TEXT_SUFFIXES = (".txt", ".md")
KINDS = ("text:PATH", "npz:PATH", "two-task")


class TokenData(BaseModel):
    """Token contexts, split into train and held-out, with optional task labels and a way to show tokens."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str  # the spec it was read from
    train: torch.Tensor  # (n_train, L) int64
    test: torch.Tensor  # (n_test, L) int64: the held-out contexts
    task_train: torch.Tensor | None = None  # (n_train,) int64
    task_test: torch.Tensor | None = None
    task_names: list[str] = []
    tokenizer: Tokenizer

    @property
    def context(self) -> int:
        return int(self.test.shape[1])

    def token(self, token_id: int) -> str:
        return self.tokenizer.token(int(token_id))


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if files:
            return files
        raise TokenDataError(f"{str(path)!r} holds no {' or '.join(TEXT_SUFFIXES)} files to read as text.")
    raise TokenDataError(f"{str(path)!r} does not exist; --data text:PATH takes a text file or a folder of them.")


def text_contexts(path: Path, tokenizer: Tokenizer, context: int) -> np.ndarray:
    """The files' tokens as one stream (files joined by a newline), cut into whole contexts of ``context`` tokens."""
    ids: list[int] = []
    for file in _text_files(path):
        try:
            ids += tokenizer.encode(file.read_text(encoding="utf-8") + "\n")
        except UnicodeDecodeError:
            raise TokenDataError(f"{str(file)!r} is not UTF-8 text.") from None
    n = len(ids) // context
    if n < 2:
        raise TokenDataError(
            f"{str(path)!r} gives {len(ids)} tokens, fewer than two contexts of {context}; add text or lower --context."
        )
    return np.asarray(ids[: n * context], dtype=np.int64).reshape(n, context)


Split = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _split(ids: np.ndarray, task: np.ndarray | None, heldout: float, seed: int) -> Split:
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, min(len(ids) - 1, round(heldout * len(ids))))
    train, test = order[:-n_test], order[-n_test:]
    if task is None:
        return ids[train], ids[test], None, None
    return ids[train], ids[test], task[train], task[test]


def _npz(path: Path, heldout: float, seed: int) -> Split:
    if not path.is_file():
        raise TokenDataError(f"{str(path)!r} does not exist; --data npz:PATH takes a .npz file of token ids.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as error:
        raise TokenDataError(f"{str(path)!r} is not a readable .npz file ({error}).") from None
    if "train" in arrays and "test" in arrays:
        return arrays["train"], arrays["test"], arrays.get("task_train"), arrays.get("task_test")
    if "ids" not in arrays:
        raise TokenDataError(f"{str(path)!r} holds {sorted(arrays)}; it needs 'ids' (n, L), or 'train' and 'test'.")
    return _split(arrays["ids"], arrays.get("task"), heldout, seed)


def _checked(name: str, ids: np.ndarray, vocab_size: int | None) -> torch.Tensor:
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 2 or not np.issubdtype(ids.dtype, np.integer):
        raise TokenDataError(
            f"{name}: {ids.dtype} ids of shape {ids.shape}; contexts are integer ids (n, L) with L ≥ 2."
        )
    top = int(ids.max())
    if int(ids.min()) < 0 or (vocab_size is not None and top >= vocab_size):
        raise TokenDataError(
            f"{name}: token ids run from {int(ids.min())} to {top}, outside the model's vocabulary 0…"
            f"{vocab_size - 1 if vocab_size else '?'}; tokenise with the model's own tokenizer."
        )
    return torch.as_tensor(ids, dtype=torch.int64)


def load_token_data(
    spec: str,
    *,
    vocab_size: int | None = None,
    model_dir: str | Path | None = None,
    tokenizer: Tokenizer | None = None,
    context: int = 128,
    heldout: float = 0.2,
    n_contexts: int = 512,
    seed: int = 0,
) -> TokenData:
    """Token contexts from a ``--data`` spec (``text:PATH``, ``npz:PATH`` or ``two-task``).

    Parameters
    ----------
    spec : str
    vocab_size : int, optional
        The model's vocabulary: every id must be below it (``two-task`` needs it, even).
    model_dir : path, optional
        The model directory whose ``tokenizer.json`` tokenises text; without one, text is read as bytes.
    tokenizer : Tokenizer, optional
        Overrides ``model_dir``.
    context : int, default 128
        Tokens per context (text and two-task).
    heldout : float, default 0.2
        The fraction of contexts held out (text, two-task, and npz files with ``ids``).
    n_contexts : int, default 512
        two-task: contexts generated.
    seed : int, default 0

    Raises
    ------
    TokenDataError
    """
    if context < 2 or not 0.0 < heldout < 1.0:
        raise TokenDataError(f"context={context} must be ≥ 2 and heldout={heldout} strictly between 0 and 1.")
    kind, _, rest = spec.partition(":")
    tasks: list[str] = []
    if kind == "two-task" and not rest:
        if vocab_size is None or vocab_size < 4 or vocab_size % 2:
            raise TokenDataError(f"two-task needs a model whose vocabulary is even and ≥ 4, not {vocab_size}.")
        ids, task = two_task(n_contexts, context, vocab_size, seed=seed)
        train, test, task_train, task_test = _split(ids, task, heldout, seed)
        names = [f"{'e' if i % 2 == 0 else 'o'}{i}" for i in range(vocab_size)]
        tokenizer, tasks = NamedTokenizer("two-task", names), list(TASKS)
    elif kind == "text" and rest:
        tokenizer = tokenizer or load_tokenizer(model_dir)
        if vocab_size is not None and tokenizer.name == "bytes" and vocab_size < 256:
            raise TokenDataError(
                f"The model has no tokenizer.json and a vocabulary of {vocab_size} < 256, so text cannot be read as "
                "bytes; save its tokenizer beside it or pass pre-tokenised ids as npz:PATH."
            )
        ids = text_contexts(Path(rest), tokenizer, context)
        train, test, task_train, task_test = _split(ids, None, heldout, seed)
    elif kind == "npz" and rest:
        train, test, task_train, task_test = _npz(Path(rest), heldout, seed)
        tokenizer = tokenizer or load_tokenizer(model_dir)
        if task_test is not None:
            tasks = [f"task {t}" for t in range(int(np.max(task_test)) + 1)]
    else:
        raise TokenDataError(f"--data {spec!r} is not one of {', '.join(KINDS)}.")
    return TokenData(
        name=spec,
        train=_checked(f"{spec} (train)", np.asarray(train), vocab_size),
        test=_checked(f"{spec} (held out)", np.asarray(test), vocab_size),
        task_train=None if task_train is None else torch.as_tensor(np.asarray(task_train), dtype=torch.int64),
        task_test=None if task_test is None else torch.as_tensor(np.asarray(task_test), dtype=torch.int64),
        task_names=tasks,
        tokenizer=tokenizer,
    )
