"""The causal language model of a model directory, head included, for the assessments that run it (methods.md
§11): the same refusals as ``load_transformer`` (local files, safetensors, no model code), then the family's LM
class filled from the files in float32."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from neuronmap.loaders.errors import CheckpointError
from neuronmap.loaders.transformers.directory import WeightFiles, hub_offline, read_config, weight_files
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
    import transformers

    path = Path(path)
    _, family = read_config(path)
    files = weight_files(path)
    model_class = getattr(transformers, LM_CLASSES[family.name])
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
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise MissingTensorError(missing[0], f"the safetensors of {str(path)!r}", len(missing))
    model.eval()
    return model.to(torch.float32), files
