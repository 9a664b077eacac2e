"""hf_birnn: bidirectional recurrent networks (RNN, GRU, LSTM) as first-class Hugging Face models.

Importing the package registers `BiRNNConfig` and every model class with transformers' Auto classes, and marks
them for `save_pretrained` to write `auto_map` and copy the code, so saved folders also load with
`trust_remote_code=True` where `hf_birnn` is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_birnn import BiRNNConfig
from .modeling_birnn import (
    BiRNNForCausalLM,
    BiRNNForMaskedLM,
    BiRNNForSequenceClassification,
    BiRNNForTokenClassification,
    BiRNNModel,
    BiRNNPreTrainedModel,
)

AUTO_CLASSES = {
    AutoModel: BiRNNModel,
    AutoModelForTokenClassification: BiRNNForTokenClassification,
    AutoModelForMaskedLM: BiRNNForMaskedLM,
    AutoModelForCausalLM: BiRNNForCausalLM,
    AutoModelForSequenceClassification: BiRNNForSequenceClassification,
}


def _register() -> None:
    AutoConfig.register(BiRNNConfig.model_type, BiRNNConfig, exist_ok=True)
    BiRNNConfig.register_for_auto_class()
    for auto_class, model_class in AUTO_CLASSES.items():
        auto_class.register(BiRNNConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)


_register()

__version__ = "0.1.0"

__all__ = ["BiRNNConfig", "BiRNNPreTrainedModel", *sorted(model.__name__ for model in AUTO_CLASSES.values())]
