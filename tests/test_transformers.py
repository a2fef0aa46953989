"""The Hugging Face transformers integration against transformers' own eager attention.

Tiny randomly initialised GPT-2 and Llama (GQA) models, no downloads. Weights use a larger init
range than the default so attention is far from uniform and differences show.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyflashattn.integrations import transformers as pfa_hf  # noqa: E402

from conftest import DEVICE  # noqa: E402

NAME = pfa_hf.register()
BATCH, SEQ, VOCAB = 3, 21, 101


def gpt2_config():
    return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64,
                                   attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, initializer_range=0.2,
                                   bos_token_id=0, eos_token_id=0)


def llama_config():
    return transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                    max_position_embeddings=64, initializer_range=0.2,
                                    bos_token_id=0, eos_token_id=0, pad_token_id=0)


def mistral_sliding_config():
    """Sliding window shorter than the sequence: the masked SDPA path."""
    return transformers.MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=1, vocab_size=VOCAB,
                                      max_position_embeddings=64, initializer_range=0.2, sliding_window=8,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)


CONFIGS = {"gpt2": gpt2_config, "llama-gqa": llama_config, "mistral-sliding": mistral_sliding_config}


def model_pair(config_fn):
    """The same weights twice: eager and pyflashattn (separate configs: from_config writes the
    implementation into the config it is given)."""
    eager = transformers.AutoModelForCausalLM.from_config(config_fn(), attn_implementation="eager").to(DEVICE)
    ours = transformers.AutoModelForCausalLM.from_config(config_fn(), attn_implementation=NAME).to(DEVICE)
    ours.load_state_dict(eager.state_dict())
    assert ours.config._attn_implementation == NAME
    return eager, ours


def padding_mask(kind):
    """``(BATCH, SEQ)`` 0/1 mask: None, left or right padding (one row unpadded), or holes."""
    if kind == "none":
        return None
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    if kind == "left":
        mask[0, :7], mask[1, :1] = 0, 0
    elif kind == "right":
        mask[0, 15:], mask[2, 4:] = 0, 0
    else:  # holes anywhere (packed prompts)
        mask[0, 3:6], mask[1, ::4] = 0, 0
    return mask.to(DEVICE)


def test_register_rejects_flash_names():
    with pytest.raises(ValueError, match="flash"):
        pfa_hf.register("my_flash_attention")
    assert pfa_hf.register() == "pyfa"


@pytest.mark.parametrize("pad", ["none", "left", "right", "holes"])
@pytest.mark.parametrize("arch", CONFIGS)
def test_causal_lm_matches_eager(arch, pad):
    eager, ours = model_pair(CONFIGS[arch])
    ids = torch.randint(1, VOCAB, (BATCH, SEQ), device=DEVICE)
    mask = padding_mask(pad)
    keep = torch.ones(BATCH, SEQ, dtype=torch.bool, device=DEVICE) if mask is None else mask.bool()
    # the loss at t scores logits[t - 1]: count it only where position t - 1 is real too (the
    # output at a padded position is arbitrary in eager and 0 here)
    scored = keep & torch.cat([keep[:, :1], keep[:, :-1]], dim=1)
    labels = ids.masked_fill(~scored, -100)
    results = []
    for model in (eager, ours):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        results.append((out.logits.detach(), out.loss.detach(),
                        {n: p.grad for n, p in model.named_parameters()}))
    (logits_e, loss_e, grads_e), (logits_o, loss_o, grads_o) = results
    torch.testing.assert_close(logits_o[keep], logits_e[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loss_o, loss_e, atol=1e-5, rtol=1e-5)
    for name, g in grads_e.items():
        torch.testing.assert_close(grads_o[name], g, atol=1e-4, rtol=1e-3, msg=lambda m: f"grad of {name}: {m}")


def test_attention_function_padded_rows_are_zero():
    """Reorder path, checked at the function level: real rows match a dense reference, padded
    query rows are 0, and no gradient reaches padded keys."""
    b, h, hk, s, d = 2, 4, 2, 37, 16
    q = torch.randn(b, h, s, d, device=DEVICE, requires_grad=True)
    k = torch.randn(b, hk, s, d, device=DEVICE, requires_grad=True)
    v = torch.randn(b, hk, s, d, device=DEVICE, requires_grad=True)
    keep = torch.ones(b, s, dtype=torch.bool, device=DEVICE)
    keep[0, :11], keep[1, 30:] = False, False
    module = torch.nn.Module()
    module.is_causal = True
    out, weights = pfa_hf.attention_forward(module, q, k, v, pfa_hf.build_mask(b, s, s, attention_mask=keep,
                                            mask_function=transformers.masking_utils.causal_mask_function),
                                            scaling=0.3)
    assert weights is None and out.shape == (b, s, h, d)
    dense = keep[:, None, None, :] & torch.ones(s, s, dtype=torch.bool, device=DEVICE).tril()
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=dense, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out[keep], ref[keep], atol=2e-5, rtol=1e-5)
    assert (out[~keep] == 0).all()
    out.sum().backward()
    assert (k.grad.transpose(1, 2)[~keep] == 0).all() and (v.grad.transpose(1, 2)[~keep] == 0).all()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # past_key_values: the name 5.17 knows
def test_decode_with_cache_and_left_padding():
    """Prefill a left-padded batch, then decode two tokens with the cache: the decode steps take
    the masked SDPA path, the prefill the reorder path; logits match eager at every step."""
    eager, ours = model_pair(llama_config)
    ids = torch.randint(1, VOCAB, (BATCH, SEQ), device=DEVICE)
    mask = padding_mask("left")
    steps = torch.randint(1, VOCAB, (2, BATCH, 1), device=DEVICE)
    logits = []
    with torch.no_grad():
        for model in (eager, ours):
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            cache, m, seen = out.past_key_values, mask, [out.logits[:, -1]]
            for tok in steps:
                m = torch.cat([m, torch.ones(BATCH, 1, dtype=m.dtype, device=DEVICE)], dim=1)
                out = model(input_ids=tok, attention_mask=m, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                seen.append(out.logits[:, -1])
            logits.append(torch.stack(seen))
    torch.testing.assert_close(logits[1], logits[0], atol=1e-4, rtol=1e-4)


def test_dropout_is_refused_with_the_fix():
    config = gpt2_config()
    config.attn_pdrop = 0.1
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=NAME).to(DEVICE).train()
    with pytest.raises(NotImplementedError, match="attn_pdrop"):
        model(input_ids=torch.randint(1, VOCAB, (1, 8), device=DEVICE))


@pytest.mark.parametrize("pad", ["none", "left"])
def test_torch_compile_fullgraph(pad):
    torch._dynamo.reset()
    eager, ours = model_pair(llama_config)
    backend = "aot_eager" if DEVICE == "cpu" else "inductor"
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    ids = torch.randint(1, VOCAB, (BATCH, SEQ), device=DEVICE)
    mask = padding_mask(pad)
    try:  # control: transformers' own eager model under the same compile
        torch.compile(eager, fullgraph=True, backend=backend)(input_ids=ids, attention_mask=mask, use_cache=False)
    except torch._dynamo.exc.Unsupported as e:
        # seen with transformers 5.17 + torch 2.11: create_causal_mask graph-breaks for every
        # attention implementation, so fullgraph cannot be tested on that pairing
        pytest.skip(f"this transformers/torch pair graph-breaks without pyflashattn: {str(e).splitlines()[0]}")
    torch._dynamo.reset()
    keep = torch.ones(BATCH, SEQ, dtype=torch.bool, device=DEVICE) if mask is None else mask.bool()
    out = compiled(input_ids=ids, attention_mask=mask, use_cache=False).logits
    ref = eager(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-4, rtol=1e-4)
    out[keep].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.parameters() if p.requires_grad)
