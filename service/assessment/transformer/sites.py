"""Where a language model's MLP neurons are: the hidden activations entering each block's output projection
(methods.md §11.2), found through the families of ``loaders.transformers``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from neuronmap.loaders.transformers import TransformerWeights, transformer_weights
from neuronmap.service.errors import AssessmentInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class MlpSites:
    """A language model's blocks: the module whose input is block i's MLP hidden activations, and its weights."""

    weights: TransformerWeights
    writers: list[nn.Module]  # block i's output projection (c_proj, down_proj, dense_4h_to_h)
    blocks: list[nn.Module]  # block i itself: ablations of block i re-run only the blocks after it
    final_norm: nn.Module  # the norm in front of the LM head (ln_f, final_layer_norm, norm)
    head: nn.Module  # the LM head: logits = head(final_norm(last block's output))

    @property
    def n_blocks(self) -> int:
        return len(self.writers)

    def d_mlp(self, block: int) -> int:
        return self.weights.blocks[block].d_mlp

    def writer_weight(self, block: int) -> torch.Tensor:
        """(d_mlp, d_model): block ``block``'s output projection as ``out = h @ W + b``, in the model's dtype and on its
        device (a view of the live weight: GPT-2's Conv1D keeps it so, ``nn.Linear`` transposed)."""
        weight = self.writers[block].weight
        assert isinstance(weight, torch.Tensor)
        return weight.detach().T if isinstance(self.writers[block], nn.Linear) else weight.detach()

    def block_of(self, layer_name: str) -> int:
        """The block whose MLP a stored layer is, by the layer's name (its module path, with or without the head
        model's prefix)."""
        for block in self.weights.blocks:
            tail = f"{self.weights.family.layers}.{block.index}.mlp"
            if layer_name in (block.path, tail) or layer_name.endswith("." + tail):
                return block.index
        raise AssessmentInputError(
            f"Layer {layer_name!r} is not the MLP of any block of this model "
            f"({self.weights.blocks[0].path} … {self.weights.blocks[-1].path}); "
            "pass the model the graph was built from."
        )


def final_norm(model: nn.Module) -> nn.Module:
    """The norm in front of a language model's head, where its family keeps it."""
    base = getattr(model, "base_model", model)
    for name in ("ln_f", "final_layer_norm", "norm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return cast(nn.Module, getattr(base, name))
    raise AssessmentInputError(f"{type(model).__name__} has no final norm where its family keeps it (ln_f, norm).")


def mlp_sites(model: nn.Module) -> MlpSites:
    """The MLP sites of an in-process language model (GPT-2, GPT-NeoX or Llama, with its LM head)."""
    head = getattr(model, "get_output_embeddings", None)
    if not callable(head) or head() is None:
        raise AssessmentInputError(
            f"{type(model).__name__} has no language-model head; ablations measure next-token loss, so pass the "
            "causal LM (e.g. GPT2LMHeadModel, LlamaForCausalLM)."
        )
    weights = transformer_weights(cast("PreTrainedModel", model))
    base = model.base_model
    blocks = getattr(base, weights.family.layers)
    return MlpSites(
        weights=weights,
        writers=[block.get_submodule(weights.family.writer) for block in blocks],
        blocks=list(blocks),
        final_norm=final_norm(model),
        head=head(),
    )
