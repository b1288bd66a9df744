"""The resume pass of a frozen LM: multi-process features, resumable shards, and the T=1 likelihood bound."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_predictor import dirs, make_data, make_model, planted_csv, trainer  # noqa: F401

from lit_career.llm.backbone import load_frozen_lm
from lit_career.llm.features import FrozenLM, extract, likelihood_bound, resume_pass


@pytest.fixture(scope="module")
def split(planted_csv, dirs):  # noqa: F811
    data = make_data(planted_csv, dirs, max_persons=60)
    data.setup()
    return data.token_ids("valid") + data.token_ids("test"), _joined(data), data.tokenizer.pad_token_id


def _joined(data) -> pd.DataFrame:
    """Valid and test transitions as one table over both splits' resumes."""
    valid, test = data.transitions("valid"), data.transitions("test")
    shifted = test.assign(resume=test["resume"] + len(data.token_ids("valid")))
    return pd.concat([valid, shifted], ignore_index=True)


def test_target_log_prob_is_the_lm_s_own_probability_of_each_realized_target(split):
    token_ids, table, pad = split
    lm = load_frozen_lm("tiny", None, "none", torch.device("cpu"))
    hidden, target = resume_pass(lm, token_ids, table, layer=-1, batch_size=3, pad_id=pad)
    for row in table.iloc[[0, len(table) // 2, -1]].itertuples():
        ids = torch.tensor([token_ids[row.resume]])
        with torch.no_grad():
            out = lm(ids, output_hidden_states=True)
        logp = out.logits[0].log_softmax(-1)
        expected = sum(logp[t - 1, ids[0, t]] for t in range(row.tok_start, row.tok_end))
        assert float(target[row.Index]) == pytest.approx(float(expected), abs=1e-4)
        assert torch.allclose(hidden[row.Index], out.hidden_states[-1][0, row.tok_start - 1], atol=1e-5)


def test_two_worker_processes_give_the_single_process_features_and_a_stopped_run_resumes(split, tmp_path):
    token_ids, table, pad = split
    lm = FrozenLM("tiny")
    settings = dict(layer=-1, batch_size=4, pad_id=pad, shard_size=7)
    one = extract(lm, token_ids, table, tmp_path / "one", workers=1, **settings)
    two = extract(lm, token_ids, table, tmp_path / "two", workers=2, **settings)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    shards = sorted((tmp_path / "two").iterdir())
    assert len(shards) == math.ceil(len(token_ids) / 7)

    shards[1].unlink()  # a run stopped before this shard: only it is computed again
    kept = {p: p.stat().st_mtime_ns for p in shards if p.exists()}
    again = extract(lm, token_ids, table, tmp_path / "two", workers=1, **settings)
    assert torch.equal(again[0], one[0]) and torch.equal(again[1], one[1])
    assert shards[1].is_file() and all(p.stat().st_mtime_ns == t for p, t in kept.items())


def test_bound_is_the_perplexity_of_the_lm_probabilities_per_subset():
    target = torch.log(torch.tensor([0.5, 0.25, 0.1, 0.2]))
    state, prev = np.array([3, 3, 4, 5]), np.array([-1, 3, 3, 5])
    bound = likelihood_bound(target, state, prev)
    assert bound["ppl_all_bound"] == pytest.approx(math.exp(-float(target.mean())))
    assert bound["ppl_all_excl_first_bound"] == pytest.approx(math.exp(-float(target[1:].mean())))
    assert bound["ppl_movers_bound"] == pytest.approx(10.0)
    assert bound["ppl_stayers_bound"] == pytest.approx(math.exp(-float(target[[1, 3]].mean())))


def test_bound_holds_against_the_exact_t1_likelihood_head_on_a_sample(planted_csv, dirs, tmp_path):  # noqa: F811
    data = make_data(planted_csv, dirs, max_persons=60)
    model = make_model(dirs, head="two_stage", feature_cache_dir=str(tmp_path))
    trainer().validate(model, data, verbose=False)
    report = model.likelihood_bound("valid", sample_persons=3, seed=0)
    assert report["sample_persons"] == 3 and report["sample_transitions"] > 3
    # the exact head (closed-set scores renormalized) is below the bound, by exactly exp(mean log Z)
    assert report["sample_mean_log_z"] <= 0
    assert report["sample_ppl_exact"] <= report["sample_ppl_bound"]
    ratio = report["sample_ppl_exact"] / report["sample_ppl_bound"]
    assert ratio == pytest.approx(math.exp(report["sample_mean_log_z"]), rel=1e-4)
    assert report["sample_max_abs_diff_target"] < 1e-4  # the scorer and the resume pass agree


def test_max_train_persons_keeps_valid_and_test_persons(planted_csv, dirs):  # noqa: F811
    full = make_data(planted_csv, dirs)
    few = make_data(planted_csv, dirs, max_train_persons=20)
    full.setup()
    few.setup()
    for split in ("valid", "test"):
        assert few.transitions(split).equals(full.transitions(split))
    kept = set(few.resumes("train")["person_id"])
    assert len(kept) == 20 and kept < set(full.resumes("train")["person_id"])
    assert few.stats["sources"]["planted"]["unused_train_resumes"] == len(full.resumes("train")) - 20
