"""The supported transformer families and what the graphs read from each block: W_in, W_out and the norm's γ
(and, for attention heads as units, W_V, W_O and the attention's norm γ_attn).

A family is detected from the config's ``model_type``. Every block gives one ``MlpBlock`` in float32 with the
maths' orientation (methods.md §10): W_in as d_model × d_mlp, W_out as d_mlp × d_model. HF's ``Conv1D`` (GPT-2)
stores its weight as (in, out) and ``nn.Linear`` as (out, in); the orientation is taken from the module's class,
never assumed, and the shapes are checked against the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from neuronmap.loaders.errors import NonFiniteWeightsError
from neuronmap.loaders.transformers.errors import UnsupportedTransformerError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NormKind = Literal["layernorm", "rmsnorm"]
# Where W_V sits among a projection's outputs: GPT-2's c_attn is [q | k | v], each n_head × d_head; GPT-NeoX's
# query_key_value is, per head, [q_h, k_h, v_h] (transformers views it as (…, n_head, 3·d_head)); Llama's v_proj
# is W_V alone, n_kv_head × d_head.
ValuesLayout = Literal["qkv", "per_head_qkv", "separate"]


@dataclass(frozen=True)
class Family:
    """Where one family keeps its blocks, its MLP's projections and the norm in front of the MLP."""

    name: str  # the config's model_type
    base_class: str  # the transformers class of the bare model, which from_pretrained fills
    layers: str  # attribute of the bare model holding the blocks
    norm: NormKind
    mlp_norm: str  # the norm the MLP reads, inside a block
    readers: tuple[tuple[str, str], ...]  # (reader name, module path inside a block): the MLP's input projections
    writer: str  # the MLP's output projection, inside a block
    attention: str = ""  # the attention module, inside a block: the name of its layer of heads
    attn_norm: str = ""  # the norm the attention reads, inside a block
    values: str = ""  # the projection holding W_V, inside a block
    values_layout: ValuesLayout = "separate"  # how ``values`` packs W_V among its outputs
    attn_writer: str = ""  # the attention's output projection W_O, inside a block

    @property
    def gated(self) -> bool:
        return len(self.readers) > 1


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "gpt2",
            "GPT2Model",
            "h",
            "layernorm",
            "ln_2",
            (("in", "mlp.c_fc"),),
            "mlp.c_proj",
            attention="attn",
            attn_norm="ln_1",
            values="attn.c_attn",
            values_layout="qkv",
            attn_writer="attn.c_proj",
        ),
        Family(
            "gpt_neox",
            "GPTNeoXModel",
            "layers",
            "layernorm",
            "post_attention_layernorm",
            (("in", "mlp.dense_h_to_4h"),),
            "mlp.dense_4h_to_h",
            attention="attention",
            attn_norm="input_layernorm",
            values="attention.query_key_value",
            values_layout="per_head_qkv",
            attn_writer="attention.dense",
        ),
        Family(
            "llama",
            "LlamaModel",
            "layers",
            "rmsnorm",
            "post_attention_layernorm",
            (("gate", "mlp.gate_proj"), ("up", "mlp.up_proj")),
            "mlp.down_proj",
            attention="self_attn",
            attn_norm="input_layernorm",
            values="self_attn.v_proj",
            values_layout="separate",
            attn_writer="self_attn.o_proj",
        ),
    )
}

# Config flags that move the norm behind the residual add: the direct-path formula assumes pre-norm blocks.
POST_NORM_FLAGS = {"apply_residual_connection_post_layernorm": True, "do_layer_norm_before": False}


def detect_family(config: dict[str, Any]) -> Family:
    """The family of a config (as a dict), or an ``UnsupportedTransformerError`` naming its class.

    >>> detect_family({"model_type": "gpt2"}).base_class
    'GPT2Model'
    >>> detect_family({"model_type": "bert", "architectures": ["BertModel"]})
    Traceback (most recent call last):
    ...
    neuronmap.loaders.transformers.errors.UnsupportedTransformerError: BertModel is not a supported transformer; ...
    """
    model_type = str(config.get("model_type") or "")
    architectures = config.get("architectures") or []
    name = str(architectures[0]) if architectures else (model_type or "A config without model_type")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedTransformerError(name)
    for flag, bad in POST_NORM_FLAGS.items():
        if flag in config and config[flag] == bad:
            raise UnsupportedTransformerError(
                name,
                f"has post-LN blocks ({flag}={bad}); the neuron graph follows pre-norm blocks, where each MLP "
                "reads a norm of the residual stream",
            )
    return family


@dataclass(frozen=True)
class MlpBlock:
    """One block's MLP as the graph formulas read it, in float32 (methods.md §10)."""

    index: int  # the block's position, 0 first
    path: str  # the MLP's module path, e.g. "transformer.h.3.mlp": the name of its layer of neurons
    norm_path: str  # the norm the MLP reads, e.g. "transformer.h.3.ln_2": the name of its residual layer
    w_in: dict[str, torch.Tensor]  # reader → (d_model, d_mlp): {"in": W_in} or {"gate": W_gate, "up": W_up}
    w_out: torch.Tensor  # (d_mlp, d_model)
    gamma: torch.Tensor  # (d_model,) the scale of the norm in front of the MLP
    bias: torch.Tensor | None  # (d_mlp,) the input projection's bias; None for gated MLPs

    @property
    def d_mlp(self) -> int:
        return int(self.w_out.shape[0])


@dataclass(frozen=True)
class AttentionBlock:
    """One block's attention as the head formulas read it, in float32 (methods.md §10.6)."""

    index: int  # the block's position, 0 first
    path: str  # the attention's module path, e.g. "transformer.h.3.attn": the name of its layer of heads
    norm_path: str  # the norm the attention reads, e.g. "transformer.h.3.ln_1"
    gamma: torch.Tensor  # (d_model,) γ_attn, the scale of that norm
    w_v: torch.Tensor  # (d_model, n_kv_head · d_head): KV head g's W_V is columns g·d_head … (g+1)·d_head − 1
    w_o: torch.Tensor  # (n_head · d_head, d_model): head h's W_O is rows h·d_head … (h+1)·d_head − 1
    n_head: int
    n_kv_head: int  # n_head, or fewer with grouped-query attention (query head h reads KV head h // group)

    @property
    def d_head(self) -> int:
        return int(self.w_o.shape[0]) // self.n_head

    @property
    def group(self) -> int:
        return self.n_head // self.n_kv_head


@dataclass(frozen=True)
class TransformerWeights:
    """What the graphs need from a transformer, block by block, and where it came from."""

    family: Family
    blocks: list[MlpBlock]
    config: dict[str, Any]
    arch: str  # the model's class, e.g. "GPT2LMHeadModel"
    parallel_residual: bool  # GPT-NeoX's use_parallel_residual (recorded; the MLP→MLP formula is the same)
    attention: list[AttentionBlock] = field(default_factory=list)  # read only when asked for (heads as units)

    @property
    def d_model(self) -> int:
        return int(self.blocks[0].w_out.shape[1])

    @property
    def norm(self) -> NormKind:
        return self.family.norm

    @property
    def gated(self) -> bool:
        return self.family.gated

    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, default=str)


def _module(block: nn.Module, path: str, where: str) -> nn.Module:
    try:
        return block.get_submodule(path)
    except AttributeError:
        raise UnsupportedTransformerError(where, f"has no module {path!r} where its family keeps it") from None


def _float32(tensor: torch.Tensor, name: str) -> torch.Tensor:
    value = tensor.detach().to(device="cpu", dtype=torch.float32)
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise NonFiniteWeightsError(name, bad, value.numel())
    return value


def _projection(module: nn.Module, path: str, rows: int, cols: int) -> torch.Tensor:
    """The module's weight as (rows, cols) = (in, out) of the maths, from either storage orientation."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedTransformerError(f"Module {path!r} ({type(module).__name__})", "has no weight")
    if isinstance(module, nn.Linear):  # stored (out, in)
        matrix = weight.t()
    elif type(module).__name__ == "Conv1D":  # HF's GPT-2 projection, stored (in, out)
        matrix = weight
    else:
        raise UnsupportedTransformerError(
            f"Module {path!r} ({type(module).__name__})", "is neither nn.Linear nor Conv1D"
        )
    if tuple(matrix.shape) != (rows, cols):
        raise UnsupportedTransformerError(
            f"Module {path!r} ({type(module).__name__})",
            f"maps {tuple(matrix.shape)[0]} → {tuple(matrix.shape)[1]} units, expected {rows} → {cols}",
        )
    return _float32(matrix, path)


def _in_width(module: nn.Module) -> int:
    """The input width of a projection: in_features of a Linear, the rows of a Conv1D's (in, out) weight."""
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0


def _gamma(module: nn.Module, path: str, norm: NormKind, d_model: int) -> torch.Tensor:
    name = type(module).__name__
    if norm == "layernorm":
        if not isinstance(module, nn.LayerNorm):
            raise UnsupportedTransformerError(f"Module {path!r} ({name})", "is not the LayerNorm its family uses")
    elif not name.endswith("RMSNorm"):
        raise UnsupportedTransformerError(f"Module {path!r} ({name})", "is not the RMSNorm its family uses")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (d_model,):
        raise UnsupportedTransformerError(f"Module {path!r} ({name})", f"has no scale γ of size {d_model}")
    return _float32(weight, path)


def _head_counts(config: Any, d_model: int, where: str) -> tuple[int, int, int]:
    """(n_head, n_kv_head, d_head) from the config; grouped-query attention needs n_head a multiple of n_kv_head."""
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    d_head = int(getattr(config, "head_dim", None) or d_model // n_head)
    if n_kv < 1 or n_head % n_kv:
        raise UnsupportedTransformerError(where, f"has {n_head} query heads over {n_kv} key/value heads")
    return n_head, n_kv, d_head


def _values(
    module: nn.Module, path: str, layout: ValuesLayout, d_model: int, heads: tuple[int, int, int]
) -> torch.Tensor:
    """W_V of every KV head as (d_model, n_kv_head · d_head), taken out of the projection that packs it."""
    n_head, n_kv, d_head = heads
    if layout == "separate":
        return _projection(module, path, d_model, n_kv * d_head)
    packed = _projection(module, path, d_model, 3 * n_head * d_head)
    if layout == "qkv":  # [q | k | v], each head-major
        return packed[:, 2 * n_head * d_head :].contiguous()
    return packed.reshape(d_model, n_head, 3, d_head)[:, :, 2, :].reshape(d_model, n_head * d_head)


def _attention_block(block: nn.Module, family: Family, where: str, index: int, config: Any) -> AttentionBlock:
    """W_V, W_O and γ_attn of one block's attention, in float32 and the maths' orientation."""
    d_model = int(config.hidden_size)
    heads = _head_counts(config, d_model, where)
    n_head, n_kv, d_head = heads
    values = _values(
        _module(block, family.values, where), f"{where}.{family.values}", family.values_layout, d_model, heads
    )
    return AttentionBlock(
        index=index,
        path=f"{where}.{family.attention}",
        norm_path=f"{where}.{family.attn_norm}",
        gamma=_gamma(_module(block, family.attn_norm, where), f"{where}.{family.attn_norm}", family.norm, d_model),
        w_v=values,
        w_o=_projection(
            _module(block, family.attn_writer, where), f"{where}.{family.attn_writer}", n_head * d_head, d_model
        ),
        n_head=n_head,
        n_kv_head=n_kv,
    )


def _prefix_of(model: nn.Module, base: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is base:
            return f"{name}." if name else ""
    return ""


def extract(
    model: PreTrainedModel,
    family: Family,
    *,
    prefix: str | None = None,
    arch: str | None = None,
    attention: bool = False,
) -> TransformerWeights:
    """Read W_in, W_out and γ of every block of ``model`` (a bare or a head model of ``family``), in float32.

    ``prefix`` is put in front of the bare model's module paths in the layer names; by default, the bare model's
    own path inside ``model`` ("transformer." for a GPT2LMHeadModel), so the names are ``model``'s module paths.
    ``attention`` also reads every block's W_V, W_O and γ_attn (``TransformerWeights.attention``), for heads as units.
    """
    base = model.base_model
    if type(base).__name__ != family.base_class:
        raise UnsupportedTransformerError(
            type(model).__name__, f"holds a {type(base).__name__}, not the {family.base_class} of {family.name}"
        )
    if prefix is None:
        prefix = _prefix_of(model, base)
    config = model.config.to_diff_dict()
    detect_family({**config, "model_type": family.name})  # the post-norm flags, on the in-process config too
    blocks_module = getattr(base, family.layers, None)
    if not isinstance(blocks_module, nn.ModuleList) or len(blocks_module) == 0:
        raise UnsupportedTransformerError(type(model).__name__, f"has no blocks in {family.layers!r}")
    d_model = int(model.config.hidden_size)
    blocks = []
    for index, block in enumerate(blocks_module):
        where = f"{prefix}{family.layers}.{index}"
        writer = _module(block, family.writer, where)
        d_mlp = _in_width(writer)
        w_in = {}
        bias = None
        for reader, path in family.readers:
            module = _module(block, path, where)
            w_in[reader] = _projection(module, f"{where}.{path}", d_model, d_mlp)
            module_bias = getattr(module, "bias", None)
            if not family.gated and isinstance(module_bias, torch.Tensor):
                bias = _float32(module_bias, f"{where}.{path}")
        blocks.append(
            MlpBlock(
                index=index,
                path=f"{where}.mlp",
                norm_path=f"{where}.{family.mlp_norm}",
                w_in=w_in,
                w_out=_projection(writer, f"{where}.{family.writer}", d_mlp, d_model),
                gamma=_gamma(
                    _module(block, family.mlp_norm, where), f"{where}.{family.mlp_norm}", family.norm, d_model
                ),
                bias=bias,
            )
        )
    attention_blocks = [
        _attention_block(block, family, f"{prefix}{family.layers}.{index}", index, model.config)
        for index, block in enumerate(blocks_module)
        if attention
    ]
    return TransformerWeights(
        family=family,
        blocks=blocks,
        attention=attention_blocks,
        config=config,
        arch=arch or type(model).__name__,
        parallel_residual=bool(getattr(model.config, "use_parallel_residual", False)) and family.name == "gpt_neox",
    )
