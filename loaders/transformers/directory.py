"""Open a Hugging Face model directory safely: local files only, safetensors only, no model code of its own.

The checks run in order and each refuses with one line before anything heavy happens: a directory with a
``config.json`` → no ``auto_map`` (remote code) → a supported family → safetensors weight files, every shard
present → ``transformers`` builds the family's bare model and fills it from those files (``local_files_only``,
``use_safetensors``, ``trust_remote_code=False``, with the hub switched off for the call) → no tensor missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from neuronmap.loaders.checkpoint import file_sha256
from neuronmap.loaders.errors import CheckpointError
from neuronmap.loaders.transformers.errors import MissingTensorError, RemoteCodeError
from neuronmap.loaders.transformers.families import Family, detect_family

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn"}
HUB_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class WeightFiles:
    """The safetensors files of a directory, what they hold and their SHA-256s."""

    names: list[str]  # file names, sorted
    sha256: list[str]  # in the same order
    tensors: dict[str, str]  # tensor name → stored dtype ("float16", …)

    @property
    def dtype(self) -> str:
        """The stored dtype of the floating-point tensors: one name, or "mixed:a,b"."""
        kinds = sorted({dtype for dtype in self.tensors.values() if dtype in DTYPES.values()})
        return kinds[0] if len(kinds) == 1 else "mixed:" + ",".join(kinds)

    @property
    def digest(self) -> str:
        """One SHA-256 for the directory's weights: of the files' names and SHA-256s, one "name sha" a line."""
        text = "".join(f"{name} {sha}\n" for name, sha in zip(self.names, self.sha256))
        return hashlib.sha256(text.encode()).hexdigest()


def read_config(path: Path) -> tuple[dict[str, Any], Family]:
    """The directory's config.json and its family; refuses remote code and unsupported architectures."""
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is not a directory; a Hugging Face model is read from the folder save_pretrained "
            "writes (config.json and *.safetensors).",
            path=str(path),
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{str(path)!r} has no config.json; save the model with save_pretrained, which writes one.", path=str(path)
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{str(config_file)!r} is not readable JSON ({error}).", path=str(path)) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(config_file)!r} does not hold a JSON object.", path=str(path))
    if config.get("auto_map"):
        raise RemoteCodeError(str(path), "auto_map: " + ", ".join(sorted(map(str, config["auto_map"]))))
    if config.get("trust_remote_code"):
        raise RemoteCodeError(str(path), "trust_remote_code")
    return config, detect_family(config)


def _header(file: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (tensor name → dtype, shape, offsets), read without its data."""
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 << 20:
                raise ValueError(f"a header of {length:,} bytes")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{str(file)!r} is not a safetensors file ({error}).", path=str(file)) from None
    header.pop("__metadata__", None)
    return dict(header)


def weight_files(path: Path) -> WeightFiles:
    """The safetensors weights of a model directory, sharded (with its index) or in one file."""
    index_file = path / INDEX_FILE
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{str(index_file)!r} has no readable weight_map ({error}).", path=str(path)
            ) from None
        names = sorted(set(map(str, weight_map.values())))
        for name in names:
            if not (path / name).is_file():
                lost = sorted(tensor for tensor, shard in weight_map.items() if shard == name)
                raise MissingTensorError(lost[0], f"{str(path)!r}: its shard {name!r} is gone", len(lost))
    elif (path / SINGLE_FILE).is_file():
        names = [SINGLE_FILE]
    else:
        pickles = sorted(p.name for pattern in PICKLES for p in path.glob(pattern))
        found = f"it holds {', '.join(pickles)}, and " if pickles else ""
        raise CheckpointError(
            f"{str(path)!r} has no {SINGLE_FILE} or {INDEX_FILE}; {found}neuronmap reads safetensors only, never a "
            "pickle. Re-save the model with save_pretrained(..., safe_serialization=True).",
            path=str(path),
        )
    tensors: dict[str, str] = {}
    for name in names:
        for tensor, info in _header(path / name).items():
            tensors[tensor] = DTYPES.get(str(info.get("dtype")), str(info.get("dtype")).lower())
    return WeightFiles(names=names, sha256=[file_sha256(path / name) for name in names], tensors=tensors)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Switch the Hugging Face hub off for the call (the env switches), and keep transformers' logging quiet."""
    saved = {name: os.environ.get(name) for name in HUB_SWITCHES}
    os.environ.update({name: "1" for name in HUB_SWITCHES})
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def key_prefix(family: Family, files: WeightFiles) -> str:
    """The prefix the files put before the bare model's tensors ("transformer." when saved from a head model)."""
    import transformers

    prefix = getattr(transformers, family.base_class).base_model_prefix
    saved_with_head = any(name.startswith(f"{prefix}.") for name in files.tensors)
    return f"{prefix}." if saved_with_head else ""


def load_offline(class_name: str, path: Path) -> tuple[PreTrainedModel, list[str]]:
    """``transformers.<class_name>`` from the directory's safetensors only (no hub, no remote code), in eval mode and
    float32, with the sorted names of the tensors the directory lacked."""
    import transformers

    model_class = getattr(transformers, class_name)
    with hub_offline():
        try:
            model, info = model_class.from_pretrained(
                str(path),
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"transformers could not load {str(path)!r}: {first}", path=str(path)) from None
    model.eval()
    return model.to(torch.float32), sorted(info.get("missing_keys") or [])


def load_bare_model(path: Path, family: Family, files: WeightFiles) -> PreTrainedModel:
    """The family's bare model filled from the directory's safetensors, in float32; refuses a missing tensor."""
    model, missing = load_offline(family.base_class, path)
    if missing:
        prefix = key_prefix(family, files)
        raise MissingTensorError(prefix + missing[0], f"the safetensors of {str(path)!r}", len(missing))
    return model
