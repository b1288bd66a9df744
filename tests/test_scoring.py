import random
import re

import bitsandbytes as bnb
import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from lit_career.llm.scoring import ClosedSetScorer, normalize

TITLES_CSV = "lit_career/resources/occupations/occ1990dd_titles.csv"
SPECIAL = ["No job reported", "Unemployed", "Not in labor force", "In education", "Military service"]
TOLERANCE = 1e-4  # nats, fast vs naive in fp32, also NF4 weights dequantized to fp32 + LoRA
BF16_KERNEL_TOLERANCE = 1e-3  # nats, NF4 + LoRA through bitsandbytes' bf16 CPU kernel (see below)


def resume(rng: random.Random, titles: list[str], years: int) -> str:
    lines = ["Resume from the NLSY79 survey.", "A female worker, non-black non-hispanic, born in 1959."]
    lines += [f"{1982 + j}: {rng.choice(titles)}" for j in range(years)]
    return "\n".join(lines) + "\nEnd of resume.\n"


@pytest.fixture(scope="module")
def setup(request):
    all_titles = pd.read_csv(request.config.rootpath / TITLES_CSV)["occ1990dd_title"].tolist()
    rng = random.Random(0)
    titles = rng.sample(all_titles, 30) + SPECIAL
    texts = [resume(rng, all_titles, 12) for _ in range(40)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=600, initial_alphabet=alphabet, show_progress=False)
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    text = resume(rng, titles, 6)
    ids = tokenizer(text)["input_ids"]
    # token index where " <title>\n" starts; shuffled, with a duplicate and the very first token
    bounds = [len(tokenizer(text[: m.end()])["input_ids"]) for m in re.finditer(r"\n\d{4}:", text)]
    bounds = [1, *rng.sample(bounds, len(bounds)), bounds[2]]
    return tokenizer, [f" {t}\n" for t in titles], ids, bounds


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def model(setup):
    return tiny_llama(len(setup[0]))


@pytest.mark.parametrize("chunk_size", [1, 40, 100_000])
def test_fast_equals_naive_in_fp32(setup, model, chunk_size):
    tokenizer, candidates, ids, bounds = setup
    scorer = ClosedSetScorer(model, tokenizer, candidates, chunk_size=chunk_size)
    fast = scorer.score_resume(ids, bounds)
    naive = scorer.naive_scores(ids, bounds)
    assert fast.shape == (len(bounds), len(candidates))
    assert (fast - naive).abs().max() <= TOLERANCE
    assert (fast < 0).all()
    assert scorer.tokens_processed["score_resume"] * 5 < scorer.tokens_processed["naive_scores"]


@pytest.mark.parametrize("bf16_cpu_kernel", [False, True])
def test_fast_equals_naive_with_nf4_weights_and_lora(setup, model, tmp_path, bf16_cpu_kernel):
    tokenizer, candidates, ids, bounds = setup
    model.save_pretrained(tmp_path)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    quantized = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=quantization, dtype=torch.float32
    )
    for layer in quantized.modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            # bitsandbytes' eval-mode kernel on AVX512-BF16 CPUs casts inputs to bf16 whatever the compute
            # dtype; without it, 4-bit layers dequantize to fp32 and the fp32 tolerance holds
            layer.support_avx512bf16_for_cpu &= bf16_cpu_kernel
    adapted = get_peft_model(quantized, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    for name, weight in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.02)
    scorer = ClosedSetScorer(adapted, tokenizer, candidates, chunk_size=64)
    fast = scorer.score_resume(ids, bounds)
    tolerance = BF16_KERNEL_TOLERANCE if bf16_cpu_kernel else TOLERANCE
    assert (fast - scorer.naive_scores(ids, bounds)).abs().max() <= tolerance
    with adapted.disable_adapter():  # the adapter is not a no-op, so the check above covers LoRA layers
        assert (fast - scorer.score_resume(ids, bounds)).abs().max() > 1e-2


def test_bf16_scores_track_fp32(setup, model):
    tokenizer, candidates, ids, bounds = setup
    fp32 = ClosedSetScorer(model, tokenizer, candidates).score_resume(ids, bounds)
    half = ClosedSetScorer(tiny_llama(len(tokenizer)).to(torch.bfloat16), tokenizer, candidates)
    scores = half.score_resume(ids, bounds)
    assert scores.dtype == torch.float32
    assert ((scores - fp32).abs() / fp32.abs()).max() < 0.02


def test_normalized_distributions_sum_to_one(setup, model):
    tokenizer, candidates, ids, bounds = setup
    logp = ClosedSetScorer(model, tokenizer, candidates).score_resume(ids, bounds)
    logq, outside = normalize(logp)
    torch.testing.assert_close(logq.exp().sum(-1), torch.ones(len(bounds)))
    torch.testing.assert_close(outside, 1 - logp.exp().sum(-1))
    assert ((outside >= 0) & (outside <= 1)).all()
    # the ranking within the set is the LM's own
    assert torch.equal(logq.argsort(-1), logp.argsort(-1))


def test_normalize_clamps_outside_mass_and_keeps_batch_shape():
    logp = torch.log(torch.tensor([[[0.2, 0.3], [0.6, 0.5]]]))
    logq, outside = normalize(logp)
    torch.testing.assert_close(logq.exp(), torch.tensor([[[0.4, 0.6], [6 / 11, 5 / 11]]]))
    torch.testing.assert_close(outside, torch.tensor([[0.5, 0.0]]))


def test_trie_shares_prefixes_and_feeds_only_internal_nodes(setup, model):
    tokenizer, _, ids, bounds = setup
    candidates = [" Sales workers\n", " Sales clerks\n", " Sales engineers\n", " Unemployed\n"]
    scorer = ClosedSetScorer(model, tokenizer, candidates)
    sequences = scorer.candidate_ids
    prefixes = {tuple(seq[:j]) for seq in sequences for j in range(1, len(seq))}
    assert scorer.trie.num_rows == len(prefixes) < sum(len(seq) - 1 for seq in sequences)
    scorer.score_resume(ids, bounds[:2])
    assert scorer.tokens_processed["score_resume"] == max(bounds[:2]) + 2 * len(prefixes)


def test_bad_arguments_are_refused(setup, model):
    tokenizer, candidates, ids, _ = setup
    with pytest.raises(ValueError, match="tokenize to nothing"):
        ClosedSetScorer(model, tokenizer, [" Cashiers\n", ""])
    with pytest.raises(ValueError, match="no candidates"):
        ClosedSetScorer(model, tokenizer, [])
    scorer = ClosedSetScorer(model, tokenizer, candidates)
    for bounds in ([0], [len(ids) + 1], []):
        with pytest.raises(ValueError, match="boundar"):
            scorer.score_resume(ids, bounds)
