import numpy as np
import pytest
from transformers import EvalPrediction

from hf_birnn.tagging import (
    IGNORE_INDEX,
    WordTagScorer,
    align_labels_with_tokens,
    convert_iob1_to_iob2,
    entity_scores,
    label_list_from,
    load_tagging_dataset,
    read_conllu,
    tag_accuracy,
    word_predictions,
)

CONLLU = """# sent_id = 1
# text = I'm in N.Y.
1-2	I'm	_	_	_	_	_	_	_	_
1	I	I	PRON	PRP	_	3	nsubj	_	_
2	'm	be	AUX	VBP	_	3	cop	_	_
3	in	in	ADP	IN	_	4	case	_	_
4	N.Y.	N.Y.	PROPN	NNP	_	0	root	_	_

# sent_id = 2
1	Go	go	VERB	VB	_	0	root	_	_
1.1	go	go	VERB	VB	_	_	_	0:root	CopyOf=1
2	!	!	PUNCT	.	_	1	punct	_	_
"""


@pytest.mark.parametrize(
    "iob1,iob2",
    [
        (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),  # B- splits two adjacent same-type entities
        (["I-ORG", "I-LOC", "I-LOC"], ["B-ORG", "B-LOC", "I-LOC"]),  # a type change starts a new entity
        (["O", "B-MISC", "I-MISC", "O"], ["O", "B-MISC", "I-MISC", "O"]),  # IOB2 stays as it is
    ],
)
def test_iob1_to_iob2(iob1, iob2):
    assert convert_iob1_to_iob2(iob1) == iob2
    assert convert_iob1_to_iob2(iob2) == iob2


def test_label_list_puts_o_first_and_groups_types():
    labels = label_list_from([["I-PER", "O", "B-LOC"], ["B-PER", "I-LOC"]])
    assert labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_labels_go_on_first_sub_token_or_all_sub_tokens():
    word_ids = [0, 0, 1, 2, 2, 2]  # three words, the first and last split into sub-tokens
    word_labels = [1, 0, 3]  # B-PER, O, B-LOC
    b_to_i = {1: 2, 3: 4}
    assert align_labels_with_tokens(word_ids, word_labels, False, b_to_i) == [1, -100, 0, 3, -100, -100]
    assert align_labels_with_tokens(word_ids, word_labels, True, b_to_i) == [1, 2, 0, 3, 4, 4]
    assert align_labels_with_tokens([None, 0, None], [0], False, b_to_i) == [IGNORE_INDEX, 0, IGNORE_INDEX]


def test_words_without_sub_tokens_are_predicted_o():
    # word 1 vanished in tokenization, word 3 was cut by truncation
    assert word_predictions([5, 6, 7], [0, 0, 2], num_words=4) == [5, 0, 7, 0]


def test_seqeval_scores_on_a_hand_made_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    scores = entity_scores(gold, predicted)
    # gold entities: PER, LOC, ORG; predicted: PER, ORG, LOC(wrong) -> 2 correct of 3 predicted, of 3 gold
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["PER_f1"] == 1.0 and scores["LOC_recall"] == 0.0 and scores["LOC_number"] == 1


def test_word_scorer_maps_padded_token_predictions_back_to_words():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER"}
    scorer = WordTagScorer(word_ids=[[0, 0, 1], [0]], gold_tags=[["B-PER", "O"], ["O"]], id2label=id2label)
    predictions = np.array([[1, 2, 0], [0, -100, -100]])  # the second row is padded
    assert scorer.predicted_tags(predictions) == [["B-PER", "O"], ["O"]]
    scores = scorer(EvalPrediction(predictions=predictions, label_ids=predictions))
    assert scores["f1"] == 1.0
    with pytest.raises(ValueError, match="predictions for 1 rows, expected 2"):
        scorer.predicted_tags(predictions[:1])


def test_conllu_keeps_word_rows_and_skips_multiword_tokens_and_empty_nodes(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU)
    columns = read_conllu(path)
    assert columns["tokens"] == [["I", "'m", "in", "N.Y."], ["Go", "!"]]
    assert columns["upos"] == [["PRON", "AUX", "ADP", "PROPN"], ["VERB", "PUNCT"]]
    raw = load_tagging_dataset({"train": str(path)}, "tokens", "upos", conll_column_names=[])
    assert raw["train"]["tags"] == [["PRON", "AUX", "ADP", "PROPN"], ["VERB", "PUNCT"]]


def test_malformed_conllu_line_is_named(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text("1\tGo\tgo\tVERB\n")
    with pytest.raises(ValueError, match="bad.conllu, line 1: expected 10 tab-separated CoNLL-U fields, got 4"):
        read_conllu(path)


def test_mixed_file_formats_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Mixed file formats"):
        load_tagging_dataset({"train": "a.conllu", "test": "b.txt"}, "tokens", "upos", conll_column_names=[])


def test_tag_accuracy_counts_words():
    gold = [["DET", "NOUN", "VERB"], ["PUNCT"]]
    predicted = [["DET", "VERB", "VERB"], ["PUNCT"]]
    assert tag_accuracy(gold, predicted) == {"accuracy": 0.75}
