"""Tokenizers for text data: the model directory's ``tokenizer.json`` (the ``tokenizers`` package), else bytes.

Nothing is downloaded: a tokenizer is read from a local file or is the byte-level one, which needs no file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from neuronmap.loaders.tokens.errors import TokenDataError

TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
    """What the data loaders and the coherence tables need from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def token(self, token_id: int) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0…255, for models saved without a tokenizer (their vocabulary must hold 256 ids).

    >>> ByteTokenizer().encode("hé")
    [104, 195, 169]
    """

    name = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def token(self, token_id: int) -> str:
        return bytes([token_id]).decode("latin-1") if 0 <= token_id < 256 else f"<{token_id}>"


class FileTokenizer:
    """A ``tokenizer.json`` read with the ``tokenizers`` package (fast, local, no model code)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        try:
            self._tokenizer = HfTokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises a bare Exception for any bad file
            raise TokenDataError(f"{str(path)!r} is not a readable tokenizer.json ({error}).") from None
        self.name = f"tokenizer.json ({self._tokenizer.get_vocab_size()} tokens)"

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def token(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id], skip_special_tokens=False)


class NamedTokenizer:
    """Ids shown by a fixed list of names (the generated data sets' tokens)."""

    def __init__(self, name: str, names: list[str]) -> None:
        self.name, self._names = name, names

    def encode(self, text: str) -> list[int]:
        raise TokenDataError(f"The {self.name} tokens are generated, not read from text.")

    def token(self, token_id: int) -> str:
        return self._names[token_id] if 0 <= token_id < len(self._names) else f"<{token_id}>"


def load_tokenizer(model_dir: str | Path | None) -> Tokenizer:
    """The tokenizer saved in ``model_dir`` (its ``tokenizer.json``), else the byte-level one."""
    if model_dir is not None and (Path(model_dir) / TOKENIZER_FILE).is_file():
        return FileTokenizer(Path(model_dir) / TOKENIZER_FILE)
    return ByteTokenizer()
