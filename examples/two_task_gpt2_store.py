"""Train a tiny two-task GPT-2 offline, save it as a Hugging Face folder, then ingest and cluster it in the store.

The model is ``two_task_gpt2``'s (2 blocks, 32 MLP neurons each, its residual stream split in halves, trained on the
generated two-task data in about a minute on 2 cores; nothing is downloaded). The commands are the ones a user
types for a real checkpoint (README, "Transformers as neuron graphs"):

    neuronmap ingest FOLDER --name two-task-gpt2 --top-k 8 --replace
    neuronmap cluster two-task-gpt2 --k 2 --shuffles 20

Run it with the local server (started on demand) or ``NEO4J_URI`` set:

    python -m neuronmap.examples.two_task_gpt2_store [FOLDER]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(folder: str = "two-task-gpt2") -> None:
    from transformers import PreTrainedModel

    from neuronmap.examples.two_task_gpt2 import train_two_task_gpt2
    from neuronmap.service.cli import cli

    start = time.perf_counter()
    trained = train_two_task_gpt2()
    model: PreTrainedModel = trained.model  # type: ignore[assignment]  # a GPT2LMHeadModel, typed as nn.Module
    model.save_pretrained(folder)  # config.json + model.safetensors, as for any real checkpoint
    print(f"trained and saved to {Path(folder).resolve()} in {time.perf_counter() - start:.0f} s")
    for args in (
        ["ingest", folder, "--name", "two-task-gpt2", "--top-k", "8", "--replace"],
        ["cluster", "two-task-gpt2", "--k", "2", "--shuffles", "20", "--seed", "0"],
    ):
        print("$ neuronmap " + " ".join(args))
        cli.main(args, prog_name="neuronmap", standalone_mode=False)


if __name__ == "__main__":
    main(*sys.argv[1:2])
