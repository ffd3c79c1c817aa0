"""Character-level tokenizer of the reasoning model: one token per character of tasks.ALPHABET.

The same construction as embedded/taskmix/tokenizer.py (`tokenizers` WordLevel over single characters,
saved as a HF tokenizer) over this workload's alphabet; special ids are fixed: [PAD]=0, [MASK]=1,
[EOS]=2, [UNK]=3.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from embedded.reasoning.tasks import ALPHABET
from embedded.taskmix import tokenizer as taskmix_tokenizer


def build_tokenizer() -> PreTrainedTokenizerFast:
    return taskmix_tokenizer.build_tokenizer(ALPHABET)
