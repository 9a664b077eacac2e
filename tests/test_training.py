import pytest
import torch

from hf_birnn.training import EpochSeededLengthGroupedSampler, parse_config_overrides, training_arguments_with_defaults


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    lengths = [(i * 37) % 50 + 1 for i in range(200)]
    first, second = (EpochSeededLengthGroupedSampler(8, lengths, seed=3) for _ in range(2))
    torch.rand(5)  # a process that drew other random numbers in between (dropout, say) draws the same order
    assert list(first) == list(second)
    first.set_epoch(1)
    epoch_one = list(first)
    assert epoch_one != list(second)
    second.set_epoch(1)
    assert list(second) == epoch_one
    assert sorted(epoch_one) == list(range(200))


def test_config_overrides_are_typed_and_checked():
    overrides = parse_config_overrides("hidden_size=64,cell_type=gru,use_crf=true,embedding_dropout=0.5")
    assert overrides == {"hidden_size": 64, "cell_type": "gru", "use_crf": True, "embedding_dropout": 0.5}
    assert parse_config_overrides("crf_constraints=none") == {"crf_constraints": None}
    with pytest.raises(ValueError, match="not `field=value` for a BiRNNConfig field"):
        parse_config_overrides("hidden_sise=64")


def test_training_arguments_defaults_keep_the_help_text():
    arguments_class = training_arguments_with_defaults("Example", __name__, learning_rate=2e-3)
    field = arguments_class.__dataclass_fields__["learning_rate"]
    assert field.default == 2e-3 and "learning rate" in field.metadata["help"]
    with pytest.raises(ValueError, match="Not TrainingArguments fields"):
        training_arguments_with_defaults("Example", __name__, learning_rat=1.0)


def test_trainer_stops_at_a_non_finite_loss_naming_the_step(tmp_path):
    """A diverged step (here: an input whose embedding overflowed to inf) stops training with the step named;
    a batch without a labelled token is no divergence: its loss is 0."""
    from transformers import TrainingArguments

    from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
    from hf_birnn.training import BiRNNTrainer

    model = BiRNNForTokenClassification(BiRNNConfig(vocab_size=20, embedding_size=4, hidden_size=4, num_labels=2))
    with torch.no_grad():
        model.birnn.embeddings.word_embeddings.weight[7] = float("inf")
    unlabelled = [{"input_ids": [4, 5, 6], "labels": [-100] * 3}] * 4
    diverging = [{"input_ids": [7, 2, 3], "labels": [0, 1, 0]}] * 4
    rows = [{"input_ids": [1, 2, 3], "labels": [0, 1, 0]}] * 4 + unlabelled + diverging
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, train_sampling_strategy="sequential", report_to="none"
    )
    trainer = BiRNNTrainer(model=model, args=args, train_dataset=rows, data_collator=collate_rows)
    with pytest.raises(FloatingPointError, match="at step 3"):
        trainer.train()


def collate_rows(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.tensor([row[key] for row in rows]) for key in rows[0]}
