"""Token data for the transformer assessments, with no database involved (methods.md §11.1): text tokenised with
the model directory's tokenizer (or bytes), pre-tokenised ids, and the generated two-task data set."""

from __future__ import annotations

from neuronmap.loaders.tokens.data import TokenData, load_token_data, text_contexts
from neuronmap.loaders.tokens.errors import TokenDataError
from neuronmap.loaders.tokens.tokenizer import ByteTokenizer, FileTokenizer, Tokenizer, load_tokenizer
from neuronmap.loaders.tokens.two_task import TASKS, successor_tables, two_task

__all__ = [
    "TokenData",
    "load_token_data",
    "text_contexts",
    "TokenDataError",
    "Tokenizer",
    "ByteTokenizer",
    "FileTokenizer",
    "load_tokenizer",
    "TASKS",
    "successor_tables",
    "two_task",
]
