"""Training a fast WordPiece tokenizer from scratch for a BiRNN, with the `tokenizers` library.

A BiRNN needs no `[CLS]`/`[SEP]`: the pooled output reads each sequence's own first and last token, so the
tokenizer adds no special tokens around a text. It keeps case (case is a strong signal for names) and the offsets
that the token-classification pipeline needs to group entities.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = False,
    model_max_length: int = 100_000,
) -> PreTrainedTokenizerFast:
    """Learn a WordPiece vocabulary on `texts` and wrap it as a `PreTrainedTokenizerFast` (`[PAD]` has id 0).

    `model_max_length` is large on purpose: a BiRNN has no position table, so it has no length limit of its own.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"], max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )
