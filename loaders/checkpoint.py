"""Open checkpoint files without running code from them.

``.pt``/``.pth`` go through ``torch.load(weights_only=True)``, which refuses pickled classes, so a checkpoint can
hold tensors but not code; ``.safetensors`` hold only tensors by design; ``.pt2`` are ``torch.export`` programs,
which carry their own graph. When a file cannot be read, the error says what it holds and what to save instead.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

import torch
from torch.export import ExportedProgram

from neuronmap.loaders.errors import CheckpointError

STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")
EXPORT_SUFFIXES = (".pt2",)
SUPPORTED_SUFFIXES = STATE_DICT_SUFFIXES + EXPORT_SUFFIXES
_NESTED_KEYS = ("state_dict", "model_state_dict")  # training checkpoints often wrap the weights


def file_sha256(path: str | PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | PathLike[str]) -> dict[str, torch.Tensor] | ExportedProgram:
    """A state dict (``.pt``, ``.pth``, ``.safetensors``) or an ExportedProgram (``.pt2``), chosen by suffix."""
    path = Path(path)
    if path.suffix.lower() in EXPORT_SUFFIXES:
        return load_exported(path)
    return load_state_dict(path)


def load_state_dict(path: str | PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth``/``.safetensors`` file, on the CPU.

    A dict with a ``"state_dict"`` (or ``"model_state_dict"``) entry, as training loops save, gives that entry.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a checkpoint, holds a pickled object, or holds something other than a
        mapping of names to tensors.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix not in (".pt", ".pth"):
        raise CheckpointError(
            f"Cannot open {path.name!r}: the suffix {path.suffix or '(none)'!r} is not one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}.",
            path=str(path),
        )
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused:  # a pickled class: weights_only=True will not import it, and neither will we
            cls = refused.group(1).rsplit(".", 1)[-1]
            raise CheckpointError(
                f"Checkpoint {path.name!r} holds a pickled {cls} object, which weights_only=True "
                "refuses to load. Save model.state_dict() instead and pass --arch.",
                path=str(path),
            ) from error
        raise _not_a_checkpoint(path, error) from error
    except Exception as error:  # torch.load on arbitrary bytes raises whatever the unpickler trips on
        raise _not_a_checkpoint(path, error) from error
    return _as_state_dict(loaded, path)


def load_exported(path: str | PathLike[str]) -> ExportedProgram:
    """The ``torch.export`` program saved in a ``.pt2`` file.

    Raises
    ------
    CheckpointError
        If the file is missing or is not a program saved with ``torch.export.save``.
    """
    path = _existing(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise CheckpointError(
            f"{path.name!r} is not a .pt2 file; torch.export.save writes programs as .pt2.", path=str(path)
        )
    if not zipfile.is_zipfile(path):  # saves torch.export.load's multi-line log of the same failure
        raise CheckpointError(
            f"{path.name!r} is not a torch.export program (not a .pt2 archive). Save one with "
            "torch.export.save(torch.export.export(model, (example,)), 'model.pt2').",
            path=str(path),
        )
    try:
        with _captured_logs("torch.export", "torch._export") as logged:
            program = torch.export.load(path)
    except Exception as error:  # deserialisation of a foreign or damaged archive can fail anywhere
        # torch.export.load logs the real cause and raises a generic "see the warnings above"; report the cause.
        causes = [record.exc_info[1] for record in logged if record.exc_info and record.exc_info[1]]
        cause = causes[-1] if causes else error
        raise CheckpointError(
            f"{path.name!r} could not be read as a torch.export program "
            f"({type(cause).__name__}: {_first_sentence(cause)}). Save it with torch.export.save "
            "(torch.save writes .pt files), with the same torch version if possible.",
            path=str(path),
        ) from error
    if not isinstance(program, ExportedProgram):
        raise CheckpointError(
            f"{path.name!r} holds a {type(program).__name__}, not a torch.export program.", path=str(path)
        )
    return program


def _existing(path: str | PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {str(path)!r} {what}.", path=str(path))
    return path


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as error:  # SafetensorError for bad headers, and a few builtins for odd dtypes
        raise CheckpointError(
            f"{path.name!r} is not a safetensors file ({_first_line(error)}). Save one with "
            "safetensors.torch.save_file(model.state_dict(), path).",
            path=str(path),
        ) from error


def _not_a_checkpoint(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path.name!r} is not a PyTorch checkpoint ({type(error).__name__}: "
        f"{_first_line(error) or 'unreadable'}). Save one with "
        "torch.save(model.state_dict(), path).",
        path=str(path),
    )


def _as_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"Checkpoint {path.name!r} holds {_article(type(loaded).__name__)}, not a state "
            "dict. Save model.state_dict() instead.",
            path=str(path),
        )
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"Checkpoint {path.name!r} is a dict, but its entry {key!r} holds "
                f"{_article(type(value).__name__)}, not a tensor, so it is not a state dict. Save "
                "model.state_dict(), or a dict with the weights under 'state_dict'.",
                path=str(path),
            )
    if not loaded:
        raise CheckpointError(f"Checkpoint {path.name!r} holds an empty state dict.", path=str(path))
    return dict(loaded)


def _article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _first_sentence(error: BaseException) -> str:
    return _first_line(error).split(". ")[0].rstrip(".")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured_logs(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Keep torch.export's own logging of a failed load off the console; the CheckpointError says it in one line."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False  # torch installs its own console handlers
    try:
        yield handler.records
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
