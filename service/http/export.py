"""A partition's explorer page saved as one self-contained HTML file: the same renderer as the server's page
(:func:`.pages.render_partition`), with Plotly and the explorer's script inlined, so it opens offline and mails as
one file."""

from __future__ import annotations

from pathlib import Path

from neuronmap.cypher import Store
from neuronmap.service.http.partition import render_partition
from neuronmap.service.store.library import WEIGHT, resolve_partition


def export_partition_page(store: Store, model: str, partition: str, out: str | Path, *, edges: str = WEIGHT) -> Path:
    """Write the partition page of ``model`` (``partition``: an id or ``'latest'``) to ``out``; returns the path.

    Raises
    ------
    ModelNotFoundError, PartitionNotFoundError, NoPartitionError
        As ``resolve_partition`` raises them; nothing is written then.
    """
    partition_id = resolve_partition(store, model, partition, edges=edges)
    page = render_partition(store, partition_id, static=True)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
