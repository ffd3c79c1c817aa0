"""Character-level tokenizer of the reasoning model: one token per character of tasks.ALPHABET.

The same construction as embedded/taskmix/tokenizer.py (`tokenizers` WordLevel over single characters,
saved as a HF tokenizer) over this workload's alphabet; special ids are fixed: [PAD]=0, [MASK]=1,
[EOS]=2, [UNK]=3.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from embedded.reasoning.tasks import ALPHABET
from embedded.taskmix.tokenizer import SPECIALS


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate((*SPECIALS, *ALPHABET))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", mask_token="[MASK]", eos_token="[EOS]",
        unk_token="[UNK]", padding_side="left",
    )
