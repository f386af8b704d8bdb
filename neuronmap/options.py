"""Every user-facing option list, once, as a ``Literal`` type.

``choices(T)`` gives the tuple that validators, error messages and ``click.Choice`` use, so adding a value here
adds it everywhere. Pydantic configs annotate their fields with these types directly.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

LATEST = "latest"  # a partition reference: the newest partition of the edge kind asked for
JOB_LEASE_SECONDS = 60.0  # how long a job's claim holds without a heartbeat

DeviceName = Literal["auto", "cpu", "cuda"]
OutputFormat = Literal["table", "json", "csv"]
SummaryFormat = Literal["table", "json"]  # one record: a field/value table or a JSON object

# loaders: weight graphs
KernelNorm = Literal["entry_l1", "induced1", "spectral2", "fro"]
TransformerGraph = Literal["virtual", "mlp-in"]  # transformers: MLP→MLP through the residual, or per-block W_in
# loaders: activation graphs
CorrelationMethod = Literal["pearson", "spearman"]
ChannelReduction = Literal["mean", "l2", "spectral"]
RecordPoint = Literal["post", "pre"]
EdgeWeight = Literal["r2", "abs_r"]

# clustering
EigenSolver = Literal["auto", "dense", "lobpcg", "lanczos"]
ShuffleMethod = Literal["layer", "layer_nonzero"]  # weight graphs: permute within each layer pair
UpperTriangleMethod = Literal["all", "nonzero"]  # activation graphs: permute the upper triangle
NullMethod = Literal["layer", "layer_nonzero", "upper_triangle", "upper_triangle_nonzero"]

# assessment
LesionMethod = Literal["auto", "mask", "delta"]
BatchNormLesion = Literal["after", "before"]
Ties = Literal["conservative", "strict"]
Direction = Literal["less", "greater"]
PValueAdjustment = Literal["bonferroni", "bh"]
AccuracyMetric = Literal["overall", "balanced"]
Significance = Literal["bh", "reference"]
CoherenceMethod = Literal["features", "examples"]
AblationMethod = Literal["mean", "zero"]  # transformers: what an ablated MLP neuron is set to (methods.md §11.2)
TokenCoherenceMethod = Literal["examples", "logits", "inputs"]  # transformers (methods.md §11.3)
Parameterization = Literal["auto", "fourier", "pixel"]
Transform = Literal["jitter", "scale"]
Split = Literal["train", "test", "all"]


def choices(option: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` option type, in order."""
    return tuple(get_args(option))
