"""lm_head_inputs on small random transformers models (built from configs, nothing downloaded)."""
import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen2Config, Qwen2ForCausalLM

from arpo_kernels import linear_logprob_entropy, lm_head_inputs, logprob_entropy_reference


def tiny_qwen(tie: bool):
    cfg = Qwen2Config(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_hidden_times_head_equals_the_model_logits(tie):
    model = tiny_qwen(tie)
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden, weight = lm_head_inputs(model, input_ids=ids)
        logits = model(input_ids=ids).logits
    assert (weight is model.get_input_embeddings().weight) == tie
    torch.testing.assert_close(hidden @ weight.T, logits, rtol=1e-5, atol=1e-6)
    t = torch.randint(0, 101, (18,), generator=torch.Generator().manual_seed(2))
    lp, ent = linear_logprob_entropy(hidden.reshape(18, 32), weight, t, chunk_size=5)
    r_lp, r_ent = logprob_entropy_reference(logits.reshape(18, 101), t)
    torch.testing.assert_close(lp, r_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, r_ent, rtol=0, atol=1e-5)


def test_gradients_reach_the_model_parameters():
    model = tiny_qwen(True)
    ids = torch.randint(0, 101, (1, 6))
    hidden, weight = lm_head_inputs(model, input_ids=ids)
    lp, _ = linear_logprob_entropy(hidden[0], weight, ids[0])
    lp.sum().backward()
    assert model.get_input_embeddings().weight.grad is not None
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_soft_capped_model_is_refused():
    cfg = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, final_logit_softcapping=30.0)
    with pytest.raises(NotImplementedError, match=r"config.final_logit_softcapping = 30.0"):
        lm_head_inputs(Gemma2ForCausalLM(cfg), input_ids=torch.zeros(1, 2, dtype=torch.long))


def test_head_with_bias_is_refused():
    model = tiny_qwen(False)
    model.lm_head = torch.nn.Linear(32, 101, bias=True)
    with pytest.raises(NotImplementedError, match=r"LM head has a bias"):
        lm_head_inputs(model, input_ids=torch.zeros(1, 2, dtype=torch.long))


def test_width_multiplier_model_is_refused():
    """Inkling divides the hidden state by logits_mup_width_multiplier before its head."""
    configuration = pytest.importorskip("transformers.models.inkling.configuration_inkling")
    modeling = pytest.importorskip("transformers.models.inkling.modeling_inkling")
    cfg = configuration.InklingTextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(NotImplementedError, match=r"logits_mup_width_multiplier"):
        lm_head_inputs(modeling.InklingForCausalLM(cfg), input_ids=torch.zeros(1, 2, dtype=torch.long))
