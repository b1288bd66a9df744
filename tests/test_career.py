import numpy as np
import pandas as pd
import pytest
import torch

from lit_career.baselines.career import SIZES, CareerTransformer, predict_panel
from lit_career.baselines.career_data import CareerSequences, build_covariate_vocab
from lit_career.baselines.career_fit import pretrain_then_finetune
from lit_career.panel.careers import CareerPanel, assign_splits, make_panel
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.transitions import transition_table
from lit_career.synthetic.world import generate_population
from lit_career.two_stage import two_stage_log_probs

V = len(vocabulary())
TINY = dict(SIZES["tiny"], dropout=0.0, max_len=16, lr=1e-2, warmup=50)


def alternating_panel(
    persons: int, seed: int, length: int = 8, prefix: str = "p", pool: int = 30
) -> CareerPanel:
    """Each person alternates between two random occupations: the job two years back always returns."""
    rng = np.random.default_rng(seed)
    rows, people = [], {}
    for i in range(persons):
        pid = f"{prefix}{i:04d}"
        a, b = rng.choice(pool, size=2, replace=False)
        start = int(rng.integers(1980, 1990))
        for t in range(length):
            rows.append(
                (pid, start + t, int(a if t % 2 == 0 else b), "high_school" if t < 3 else "bachelors")
            )
        people[pid] = {
            "birth_year": int(rng.integers(1955, 1965)),
            "sex": rng.choice(["female", "male"]),
            "race": "x",
        }
    records = pd.DataFrame(rows, columns=["person_id", "year", "state", "education"])
    return make_panel(records, pd.DataFrame.from_dict(people, orient="index"), "alternating")


def first_order_nll(train: CareerPanel, test: CareerPanel, alpha: float = 0.1) -> np.ndarray:
    """Held-out NLL of a smoothed first-order Markov chain fitted on ``train``, per transition of ``test``."""
    counts = np.full((V, V), alpha)
    table = transition_table(train)
    moves = table[table["prev_state"] >= 0]
    np.add.at(counts, (moves["prev_state"].to_numpy(), moves["state"].to_numpy()), 1)
    probs = counts / counts.sum(1, keepdims=True)
    table = transition_table(test)
    moves = table[table["prev_state"] >= 0]
    return -np.log(probs[moves["prev_state"].to_numpy(), moves["state"].to_numpy()])


def tiny_model(panel: CareerPanel, **overrides) -> CareerTransformer:
    torch.manual_seed(0)
    return CareerTransformer(build_covariate_vocab([panel]), **{**TINY, **overrides}).eval()


def test_two_stage_puts_pi_on_previous_state_and_normalizes():
    torch.manual_seed(0)
    logits, stay = torch.randn(4, 5, V) * 3, torch.randn(4, 5) * 3
    prev = torch.randint(0, V, (4, 5))
    prev[0, 0] = -1
    log_probs = two_stage_log_probs(logits, stay, prev)
    probs = log_probs.double().exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 5, dtype=torch.float64))
    has = prev >= 0
    on_prev = probs.gather(-1, prev.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(on_prev[has], torch.sigmoid(stay.double())[has], rtol=1e-5, atol=1e-6)
    # moving: the other states keep the softmax proportions of their logits
    b, t = 1, 2
    others = torch.arange(V) != prev[b, t]
    expected = logits[b, t, others].softmax(-1) * torch.sigmoid(-stay[b, t])
    torch.testing.assert_close(probs[b, t, others].float(), expected, rtol=1e-4, atol=1e-7)
    # no previous state: a plain softmax
    torch.testing.assert_close(log_probs[0, 0], logits[0, 0].log_softmax(-1))


def test_gradients_are_finite_through_the_excluded_state():
    logits = torch.randn(2, 3, V, requires_grad=True)
    stay = torch.randn(2, 3, requires_grad=True)
    prev = torch.tensor([[-1, 4, 4], [-1, 7, 9]])
    log_probs = two_stage_log_probs(logits, stay, prev)
    log_probs[:, :, 4].sum().backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(stay.grad).all()


def test_sequences_encode_unknown_covariates_and_keep_recent_years():
    train = alternating_panel(50, seed=0, length=6)
    other = alternating_panel(2, seed=1, length=6, prefix="q")
    other.records.loc[0, "year"] = 2050  # a year never seen in training
    other.records["education"] = other.records["education"].where(other.records.index != 1)
    vocab = build_covariate_vocab([train])
    data = CareerSequences(other, vocab, max_len=4)
    item = data[0]
    assert len(data) == 2 and item["rows"].tolist() == [2, 3, 4, 5]  # the 4 most recent years
    assert item["prev"][0] == other.records["state"][1]  # the window still knows the job before it
    full = CareerSequences(other, vocab, max_len=16)[0]
    columns = list(vocab)
    assert full["covariates"][0, columns.index("year")] == 0
    assert full["covariates"][1, columns.index("education")] == 0
    assert (full["covariates"][2:, columns.index("year")] > 0).all()
    assert (full["covariates"][:, columns.index("location")] == 0).all()


def test_predictions_follow_transition_table_and_cover_long_careers():
    panel = alternating_panel(6, seed=2, length=10)
    model = tiny_model(panel)
    full = predict_panel(model, panel)
    pd.testing.assert_frame_equal(full.table, transition_table(panel))
    full.check_normalized()
    windowed = predict_panel(model, panel, max_len=4)
    windowed.check_normalized()  # rows never reached would be zeros and fail this
    first = (full.table.groupby("person_id").cumcount() < 4).to_numpy()
    np.testing.assert_allclose(windowed.log_probs[first], full.log_probs[first], atol=1e-5)
    assert not np.allclose(windowed.log_probs[~first], full.log_probs[~first], atol=1e-3)


def test_causal_masking_and_covariates_at_t():
    panel = alternating_panel(2, seed=3, length=6)
    model = tiny_model(panel)
    base = predict_panel(model, panel).log_probs
    changed = CareerPanel(panel.records.copy(), panel.persons, panel.source)
    changed.records.loc[3, "state"] = 200
    after = predict_panel(model, changed).log_probs
    np.testing.assert_allclose(after[:4], base[:4], atol=1e-6)  # years up to the changed one
    assert not np.allclose(after[4], base[4], atol=1e-4)
    np.testing.assert_allclose(after[6:], base[6:], atol=1e-6)  # the other person
    educated = CareerPanel(panel.records.copy(), panel.persons, panel.source)
    educated.records.loc[2, "education"] = "graduate"
    after = predict_panel(model, educated).log_probs
    np.testing.assert_allclose(after[:2], base[:2], atol=1e-6)
    assert not np.allclose(after[2], base[2], atol=1e-4)  # position t sees the covariates of year t


def test_learns_that_the_job_two_years_back_returns(tmp_path):
    train, valid, test = (alternating_panel(n, seed=s) for n, s in ((400, 10), (60, 11), (100, 12)))
    fit = pretrain_then_finetune(
        None,
        train,
        valid,
        "tiny",
        out_dir=tmp_path,
        max_epochs=25,
        patience=3,
        batch_size=32,
        **{k: v for k, v in TINY.items() if k not in SIZES["tiny"]},
    )
    assert fit.pretrained is None
    predictions = predict_panel(fit.model, test)
    predictions.check_normalized()
    nll = -predictions.realized_log_prob()
    later = (predictions.table.groupby("person_id").cumcount() >= 2).to_numpy()
    # a and b are drawn independently from 30 jobs: no first-order model beats log(29) after year 1
    markov = first_order_nll(train, test)
    assert nll[later].mean() < 0.3 < np.log(29) < markov.mean()
    assert (tmp_path / "finetune" / "checkpoints" / "best.ckpt").exists()


def test_finetuning_starts_from_the_pretrained_weights(tmp_path):
    pretrain = alternating_panel(300, seed=20, prefix="r")
    train, valid = alternating_panel(40, seed=21), alternating_panel(20, seed=22)
    extra = {k: v for k, v in TINY.items() if k not in SIZES["tiny"]}
    fit = pretrain_then_finetune(
        pretrain,
        train,
        valid,
        "tiny",
        out_dir=tmp_path,
        max_epochs=2,
        pretrain_max_epochs=15,
        batch_size=32,
        **extra,
    )
    assert fit.pretrained is not None
    vocab = fit.model.hparams.covariate_vocab
    assert set(vocab["year"]) >= set(build_covariate_vocab([pretrain])["year"])  # pretraining values kept
    torch.manual_seed(0)
    fresh = CareerTransformer(vocab, **TINY).state_dict()
    tuned, pre = fit.model.state_dict(), fit.pretrained.state_dict()
    to_pre = sum((tuned[k] - pre[k]).norm() ** 2 for k in tuned) ** 0.5
    to_fresh = sum((tuned[k] - fresh[k]).norm() ** 2 for k in tuned) ** 0.5
    assert to_pre < 0.5 * to_fresh
    scratch = pretrain_then_finetune(
        None, train, valid, "tiny", out_dir=tmp_path / "scratch", max_epochs=2, batch_size=32, **extra
    )
    test = alternating_panel(50, seed=23)
    transferred = -predict_panel(fit.model, test).realized_log_prob().mean()
    assert transferred < -predict_panel(scratch.model, test).realized_log_prob().mean() - 1.0


@pytest.mark.slow
def test_pretraining_on_resumes_helps_a_small_survey(tmp_path):
    resume = generate_population("resume", persons=3000, seed=0)
    survey = assign_splits(generate_population("survey", persons=500, seed=0), seed=0)
    train, valid, test = (survey.split(name) for name in ("train", "valid", "test"))
    args = dict(max_epochs=20, lr=3e-3, warmup=50)
    fit = pretrain_then_finetune(
        resume, train, valid, "tiny", out_dir=tmp_path / "pre", pretrain_max_epochs=10, **args
    )
    scratch = pretrain_then_finetune(None, train, valid, "tiny", out_dir=tmp_path / "scratch", **args)
    nll = {
        name: -predict_panel(m, test).realized_log_prob().mean()
        for name, m in (("pre", fit.model), ("scratch", scratch.model))
    }
    assert nll["pre"] < nll["scratch"] - 0.05
