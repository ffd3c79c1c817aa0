"""Character-level tokenizer for the embedded model, built with `tokenizers` and saved as a HF tokenizer.

One token per character keeps the vocabulary tiny (~50) and makes exact-match answers unambiguous.
Special ids are fixed: [PAD]=0, [MASK]=1, [EOS]=2, [UNK]=3.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from embedded.taskmix.tasks import ALPHABET

SPECIALS = ("[PAD]", "[MASK]", "[EOS]", "[UNK]")


def build_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet` after the fixed special ids (other workloads pass their own)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", mask_token="[MASK]", eos_token="[EOS]",
        unk_token="[UNK]", padding_side="left",
    )
