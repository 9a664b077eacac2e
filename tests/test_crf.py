"""The CRF against brute-force enumeration of every tag path, and the CRF head of the token classifier."""

import itertools

import pytest
import torch

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
from hf_birnn.modeling_birnn import LinearChainCRF, allowed_transitions

ATOL = 1e-5


def random_crf(num_tags: int, seed: int, allowed: torch.Tensor | None = None) -> LinearChainCRF:
    generator = torch.Generator().manual_seed(seed)
    crf = LinearChainCRF(num_tags, allowed)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return crf


def path_score(crf: LinearChainCRF, emissions: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    transitions, start, end = crf._scores()
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, tag] for t, tag in enumerate(path))
    return score + sum(transitions[a, b] for a, b in itertools.pairwise(path))


def all_paths(num_tags: int, length: int):
    return list(itertools.product(range(num_tags), repeat=length))


@pytest.fixture
def problem():
    """3 tags, rows of lengths 4, 2 and 1 in an aligned (right-padded) batch of 4 steps."""
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(3, 4, 3, generator=generator)
    lengths = torch.tensor([4, 2, 1])
    return random_crf(3, seed=1), emissions, lengths


def test_partition_function_matches_enumeration(problem):
    crf, emissions, lengths = problem
    log_partition = crf.log_partition(emissions, lengths)
    for row, length in enumerate(lengths.tolist()):
        scores = torch.stack([path_score(crf, emissions[row], p) for p in all_paths(3, length)])
        torch.testing.assert_close(log_partition[row], torch.logsumexp(scores, 0), atol=ATOL, rtol=0)


def test_viterbi_finds_the_best_enumerated_path(problem):
    crf, emissions, lengths = problem
    decoded = crf.viterbi_decode(emissions, lengths)
    for row, length in enumerate(lengths.tolist()):
        best = max(all_paths(3, length), key=lambda p: path_score(crf, emissions[row], p).item())
        assert decoded[row, :length].tolist() == list(best)
        assert decoded[row, length:].tolist() == [0] * (4 - length)


def test_max_marginals_match_enumeration(problem):
    """Each entry is the best score of the paths through that tag at that step, relative to the best path."""
    crf, emissions, lengths = problem
    max_marginals = crf.max_marginals(emissions, lengths)
    for row, length in enumerate(lengths.tolist()):
        paths = all_paths(3, length)
        scores = torch.stack([path_score(crf, emissions[row], p) for p in paths])
        for t in range(length):
            for tag in range(3):
                through = torch.stack([score for path, score in zip(paths, scores, strict=True) if path[t] == tag])
                expected = through.max() - scores.max()
                torch.testing.assert_close(max_marginals[row, t, tag], expected, atol=ATOL, rtol=0)


def test_nll_with_unlabelled_steps_marginalises_them(problem):
    crf, emissions, lengths = problem
    tags = torch.tensor([[2, -100, 1, 0], [1, 2, -100, -100], [-100, -100, -100, -100]])
    nll = crf.negative_log_likelihood(emissions, tags, lengths)
    for row, length in enumerate(lengths.tolist()):
        paths = all_paths(3, length)
        scores = torch.stack([path_score(crf, emissions[row], p) for p in paths])
        consistent = torch.tensor([all(g < 0 or g == y for g, y in zip(tags[row], p, strict=False)) for p in paths])
        expected = torch.logsumexp(scores, 0) - torch.logsumexp(scores[consistent], 0)
        torch.testing.assert_close(nll[row], expected, atol=ATOL, rtol=0)
    assert nll[2] == 0  # nothing observed: the likelihood of "anything" is 1


def test_iob2_constraints_rule_out_inside_tags_without_a_beginning():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    allowed = allowed_transitions(id2label, "iob2")
    start, end = 5, 6
    assert not allowed[0, 2] and not allowed[start, 2] and not allowed[1, 4] and not allowed[2, 4]
    assert allowed[1, 2] and allowed[2, 2] and allowed[0, 1] and allowed[2, end] and allowed[start, 0]
    crf = random_crf(5, seed=3, allowed=allowed)
    emissions = torch.zeros(1, 3, 5)
    emissions[0, :, 2] = 5.0  # emissions favour I-PER everywhere
    assert crf.viterbi_decode(emissions, torch.tensor([3]))[0, 0].item() != 2


def test_bioes_constraints():
    id2label = {0: "O", 1: "B-X", 2: "I-X", 3: "E-X", 4: "S-X"}
    allowed = allowed_transitions(id2label, "bioes")
    start, end = 5, 6
    assert allowed[1, 2] and allowed[1, 3] and allowed[3, 0] and allowed[4, 1] and allowed[start, 4]
    assert not allowed[1, 0] and not allowed[0, 3] and not allowed[2, end] and not allowed[1, end]


def crf_tagger(**overrides) -> BiRNNForTokenClassification:
    id2label = {0: "O", 1: "B-PER", 2: "I-PER"}
    settings = dict(vocab_size=30, embedding_size=8, hidden_size=8, num_hidden_layers=1, use_crf=True)
    settings.update(embedding_dropout=0.0, hidden_dropout=0.0, classifier_dropout=0.0)
    config = BiRNNConfig(**{**settings, **overrides}, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    return BiRNNForTokenClassification(config)


@pytest.mark.parametrize("side", ["right", "left"])
def test_crf_head_is_padding_exact(side):
    model = crf_tagger(crf_constraints="iob2").eval()
    with torch.no_grad():
        model.crf.transitions.normal_()
    short, long = torch.randint(1, 30, (3,)), torch.randint(1, 30, (6,))
    input_ids = torch.zeros(2, 6, dtype=torch.long)
    input_ids[1] = long
    span = slice(0, 3) if side == "right" else slice(3, 6)
    input_ids[0, span] = short
    attention_mask = (torch.arange(6) < 3).long().expand(2, -1).clone()
    attention_mask[1] = 1
    if side == "left":
        attention_mask[0] = attention_mask[0].flip(0)
    batched = model(input_ids, attention_mask=attention_mask).logits
    alone = model(short[None]).logits
    torch.testing.assert_close(batched[0, span], alone[0], atol=ATOL, rtol=0)
    assert batched[0, span].amax(-1).abs().max() < ATOL  # 0 on the best path
    viterbi = model.crf.viterbi_decode(model.classifier(model.birnn(short[None]).last_hidden_state), torch.tensor([3]))
    assert batched[0, span].argmax(-1).tolist() == viterbi[0].tolist()


def test_crf_head_loss_is_per_labelled_token_and_trains():
    model = crf_tagger()
    input_ids = torch.randint(1, 30, (4, 5))
    labels = (input_ids % 3).masked_fill(torch.tensor([False, False, False, False, True]), -100)
    num_items = (labels >= 0).sum()
    loss = model(input_ids, labels=labels).loss
    torch.testing.assert_close(model(input_ids, labels=labels, num_items_in_batch=num_items).loss, loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    predicted = model(input_ids).logits.argmax(-1)
    assert torch.equal(predicted[labels >= 0], labels[labels >= 0])


def test_crf_weights_survive_save_and_load(tmp_path):
    model = crf_tagger(crf_constraints="iob2").eval()
    with torch.no_grad():
        model.crf.transitions.normal_()
    model.save_pretrained(tmp_path)
    reloaded = BiRNNForTokenClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.crf.transitions, model.crf.transitions)
    input_ids = torch.randint(1, 30, (2, 5))
    assert torch.equal(reloaded(input_ids).logits, model(input_ids).logits)


def test_unknown_constraint_scheme_is_refused():
    with pytest.raises(ValueError, match="`crf_constraints` must be one of"):
        BiRNNConfig(use_crf=True, crf_constraints="bilou")
