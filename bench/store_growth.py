"""Same speed as the store grows: ingest, pull, a named query and a drop with one transformer in the store and with N.

Issue 14 asks that with five GPT-2-small models in one store, ingest, drop and query stay as fast as with one. This
ingests N copies of one GPT-2-shaped model (random init, top-k virtual graph) one after another and prints each
ingest's rate; then times a pull and ``admin.model_counts`` of the first model with all N in the store, against the
same with only that model (measured before the others arrived); then drops them in turn, so that the first drop
runs with N models in the store and the last with one. The ratios (N-model rate / one-model rate) are the figures:
near 1 means the cost of a model does not depend on the others (every lookup goes through the (model, …) indexes).

    python bench/store_growth.py                      # 5 models of 4 GPT-2-small blocks (590k edges each)
    python bench/store_growth.py --blocks 12          # five GPT-2-small models (6.5M edges each; long)
    python bench/store_growth.py --blocks 12 --no-relationships   # the same, packed edge chunks only (minutes)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# This folder holds a transformers.py: take it off the path so that `import transformers` finds Hugging Face's.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("bench_common", HERE / "common.py")
assert _spec is not None and _spec.loader is not None
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from neuronmap.loaders.ingest.weights import delete_model, ingest  # noqa: E402
from neuronmap.loaders.transformers import build_graph, read_transformer  # noqa: E402
from neuronmap.service.store.pull import pull_subgraph  # noqa: E402

SAVE = """
import sys, torch, transformers
torch.manual_seed(0)
transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer={blocks})).save_pretrained(sys.argv[1])
"""


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="pulls and count queries per measurement (median)")
    parser.add_argument(
        "--no-relationships", action="store_true", help="ingest the packed edge chunks only (ingest --no-relationships)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-shaped"
        subprocess.run([sys.executable, "-c", SAVE.format(blocks=args.blocks), str(folder)], check=True)
        weights, _ = read_transformer(folder)
        graph = build_graph(weights, top_k=32)
    edges = graph.n_edges
    print(f"{args.models} models of {args.blocks} GPT-2-small blocks, {edges:,} edges each", flush=True)
    names = [f"growth-{i}" for i in range(args.models)]
    with common.bench_store() as store:
        for name in ["growth-warm", *names]:  # leftovers of an interrupted run
            if store.run("ingest.model_status", model=name):
                delete_model(store, name)
        relationships = not args.no_relationships
        ingest(
            store, "growth-warm", graph, relationships=relationships
        )  # the server's JIT, so that model 0 is not measured cold
        delete_model(store, "growth-warm")

        def reads(name: str) -> tuple[float, float]:
            pull = statistics.median(timed(lambda: pull_subgraph(store, name)) for _ in range(args.repeats))
            counts = statistics.median(
                timed(lambda: store.run("admin.model_counts", model=name)) for _ in range(args.repeats)
            )
            return pull, counts

        ingest_s = []
        for i, name in enumerate(names):
            ingest_s.append(timed(lambda name=name: ingest(store, name, graph, relationships=relationships)))
            print(f"  ingest {i + 1}: {edges / ingest_s[-1]:,.0f} edges/s", flush=True)
            if i == 0:
                pull_one, counts_one = reads(name)
        pull_all, counts_all = reads(names[0])
        # The first drop runs with all N models in the store, the last alone.
        drop_s = [timed(lambda name=name: delete_model(store, name)) for name in names]
    rows = [
        ["ingest (edges/s)", edges / ingest_s[0], edges / ingest_s[-1], ingest_s[0] / ingest_s[-1]],
        ["pull (edges/s)", edges / pull_one, edges / pull_all, pull_one / pull_all],
        ["admin.model_counts (s)", counts_one, counts_all, counts_one / counts_all],
        ["drop (edges/s)", edges / drop_s[-1], edges / drop_s[0], drop_s[-1] / drop_s[0]],
    ]
    print()
    common.print_table(
        ["step", "1 model in the store", f"{args.models} models", f"speed ratio ({args.models} / 1)"], rows
    )


if __name__ == "__main__":
    main()
