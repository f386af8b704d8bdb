"""The causal language model of a model directory, head included, for the assessments that run it (methods.md
§11): the same refusals as ``load_transformer`` (local files, safetensors, no model code), then the family's LM
class filled from the files in float32."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from neuronmap.loaders.transformers.directory import WeightFiles, load_offline, read_config, weight_files
from neuronmap.loaders.transformers.errors import MissingTensorError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LM_CLASSES = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}


def load_causal_lm(path: str | PathLike[str]) -> tuple[PreTrainedModel, WeightFiles]:
    """(the family's causal LM filled from ``path``, in eval mode and float32; its weight files).

    Raises
    ------
    CheckpointError, RemoteCodeError, UnsupportedTransformerError, MissingTensorError
        As ``load_transformer``; a directory saved without the LM head's own weights is a MissingTensorError.
    """
    path = Path(path)
    _, family = read_config(path)
    files = weight_files(path)
    model, missing = load_offline(LM_CLASSES[family.name], path)
    if missing:
        raise MissingTensorError(missing[0], f"the safetensors of {str(path)!r}", len(missing))
    return model, files
