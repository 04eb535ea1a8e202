"""The benchmark's two executions compute the same losses (tiny fp32 model, a few seconds)."""

from __future__ import annotations

import pytest

from rna_train.bench import workload

SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 10, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 64}


@pytest.mark.parametrize("method", sorted(workload.METHODS))
def test_trainer_and_reference_style_start_from_the_same_loss(method: str) -> None:
    """Same weights (the trainer's RM model is truncated after layer l), batches and loss; no noise."""
    spec = {"shape": SHAPE, "layer": 7, "batch": 2, "seq": 12, "steps": 1, "dtype": "fp32", "device": "cpu",
            "method": method, "nu": 0.0, "head_chunk_mib": 2**-20}
    mine = workload.train_steps({**spec, "impl": "trainer"})
    ref = workload.train_steps({**spec, "impl": "reference"})
    assert mine["first_loss"] == pytest.approx(ref["first_loss"], rel=1e-5, abs=1e-6)
    assert mine["prefill_s"] > 0 and ref["prefill_s"] == 0
