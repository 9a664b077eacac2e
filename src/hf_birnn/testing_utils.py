"""Helpers for tests and checks of BiRNN models (as `transformers.testing_utils` is for transformers' own)."""

import torch

# Python lines that make `import hf_birnn` fail in the process that runs them, as where the package is not
# installed: a test script starts with them to prove that a saved folder loads from its own code.
WITHOUT_HF_BIRNN = """
import sys
sys.modules["hf_birnn"] = None
try:
    import hf_birnn
except ImportError:
    pass
else:
    raise SystemExit("hf_birnn was importable")
"""


def pad_batch(rows: list[torch.Tensor], side: str, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` (len(rows), seq_len) of the id `rows`, padded with id 0 on `side`
    (`"right"` or `"left"`)."""
    input_ids = torch.zeros(len(rows), seq_len, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), seq_len, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(seq_len - len(row), seq_len)
        input_ids[i, span] = row
        attention_mask[i, span] = 1
    return input_ids, attention_mask
