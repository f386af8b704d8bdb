"""Packed edge chunks: every edge of a layer pair as three byte arrays on one EDGE_BLOCK relationship.

The WEIGHT relationships are the graph that Cypher walks, one relationship per edge; Neo4j creates them at tens of
thousands per second on two cores, and reads them back at a few hundred thousand. The packed chunks hold the same
edges as the numeric record that pulls read: a chunk is one relationship between two Layer nodes with a million
edges at most, written and read as a handful of Bolt values. Format 1: ``src`` and ``dst`` are little-endian int32
unit indices within their layers, ``w`` little-endian float64 weights (the values the WEIGHT relationships carry).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from neuronmap.loaders.records import ModelGraph

FORMAT = 1
CHUNK_EDGES = 1_000_000  # 16 MB of arrays per chunk: far below the server's transaction memory limit
_INDEX = np.dtype("<i4")
_WEIGHT = np.dtype("<f8")


class BlockFormatError(ValueError):
    """A stored chunk is not one this version can read."""


def chunk_params(graph: ModelGraph, chunk_edges: int = CHUNK_EDGES) -> Iterator[tuple[dict[str, Any], int]]:
    """(params of ``ingest.create_edge_block`` less the model, edges) for every chunk of every block, in order."""
    for block in graph.blocks:
        rows, cols, w, _ = block.entries()
        for chunk, start in enumerate(range(0, w.size, chunk_edges)):
            stop = start + chunk_edges
            yield (
                {
                    "src_layer": block.src_layer,
                    "dst_layer": block.dst_layer,
                    "chunk": chunk,
                    "n": int(w[start:stop].size),
                    "src": rows[start:stop].astype(_INDEX).tobytes(),
                    "dst": cols[start:stop].astype(_INDEX).tobytes(),
                    "w": np.asarray(w[start:stop], dtype=_WEIGHT).tobytes(),
                },
                int(w[start:stop].size),
            )


def decode_chunk(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src units, dst units, weights) of one chunk as ``pull.model_blocks`` returns it; checks its lengths."""
    if row["format"] != FORMAT:
        raise BlockFormatError(
            f"Edge chunk {row['src_layer']}→{row['dst_layer']} #{row['chunk']} has format {row['format']!r}; this "
            f"neuronmap reads format {FORMAT}. Re-ingest the model with this version."
        )
    src = np.frombuffer(row["src"], dtype=_INDEX)
    dst = np.frombuffer(row["dst"], dtype=_INDEX)
    w = np.frombuffer(row["w"], dtype=_WEIGHT)
    if not (src.size == dst.size == w.size == row["n"]):
        raise BlockFormatError(
            f"Edge chunk {row['src_layer']}→{row['dst_layer']} #{row['chunk']} is damaged: {row['n']} edges "
            f"declared, arrays of {src.size}, {dst.size} and {w.size}."
        )
    return src, dst, w
