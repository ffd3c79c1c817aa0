"""Word-level tokenizer of the long-form model: one token per word or symbol, built with `tokenizers`.

Special ids are fixed: [PAD]=0, [MASK]=1, [EOS]=2, [UNK]=3; then the symbols, then the 512 words.
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from embedded.longform.tasks import SYMBOLS, WORDS

SPECIALS = ("[PAD]", "[MASK]", "[EOS]", "[UNK]")


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate((*SPECIALS, *SYMBOLS, *WORDS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", mask_token="[MASK]", eos_token="[EOS]",
        unk_token="[UNK]", padding_side="left", clean_up_tokenization_spaces=False,
    )
