import numpy as np
import pandas as pd
import pytest

from lit_career.baselines.features import feature_table
from lit_career.baselines.markov import MarkovBaseline
from lit_career.baselines.neural import BagOfJobsBaseline, LogitBaseline
from lit_career.panel.careers import make_panel
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.transitions import transition_table

V = len(vocabulary())


def panel_of(careers: dict[str, list[int]], education: dict[str, list[str]] | None = None, years=None):
    """A panel from state sequences (consecutive years from 2000 unless ``years`` gives them)."""
    rows = []
    for pid, states in careers.items():
        for t, state in enumerate(states):
            year = years[pid][t] if years else 2000 + t
            edu = education[pid][t] if education else "high_school"
            rows.append({"person_id": pid, "year": year, "state": state, "education": edu})
    persons = pd.DataFrame(
        {
            "birth_year": [1970 + i % 10 for i in range(len(careers))],
            "sex": ["female" if i % 2 else "male" for i in range(len(careers))],
            "race": ["black" if i % 3 else "hispanic" for i in range(len(careers))],
        },
        index=list(careers),
    )
    return make_panel(pd.DataFrame(rows), persons, "test")


def mean_nll(predictions: Predictions) -> float:
    return float(-predictions.realized_log_prob().mean())


def test_markov1_is_smoothed_counts():
    train = panel_of({"a": [0, 1, 1], "b": [0, 1, 2], "c": [3, 0]})
    model = MarkovBaseline(order=1, smoothing=0.5).fit(train)
    pred = model.predict(panel_of({"d": [0, 1, 2], "e": [5, 7]}))
    p = np.exp(pred.log_probs.astype(np.float64))
    # row 0: first year of d, from the first-year states {0, 0, 3}
    assert p[0, 0] == pytest.approx(2.5 / (3 + 0.5 * V), rel=1e-5)
    assert p[0, 3] == pytest.approx(1.5 / (3 + 0.5 * V), rel=1e-5)
    assert p[0, 9] == pytest.approx(0.5 / (3 + 0.5 * V), rel=1e-5)
    # rows 1, 2: after 0 (0->1 twice), after 1 (1->1, 1->2)
    assert p[1, 1] == pytest.approx(2.5 / (2 + 0.5 * V), rel=1e-5)
    assert p[2, 2] == pytest.approx(1.5 / (2 + 0.5 * V), rel=1e-5)
    assert p[2, 1] == pytest.approx(1.5 / (2 + 0.5 * V), rel=1e-5)
    # row 4: after state 5, never seen: uniform
    np.testing.assert_allclose(p[4], 1 / V, rtol=1e-5)


def test_markov2_uses_the_state_two_back_and_backs_off():
    careers = {f"x{i}": [0, 2, 3] for i in range(3)} | {f"y{i}": [1, 2, 4] for i in range(3)}
    train = panel_of(careers)
    first = MarkovBaseline(order=1, smoothing=0.5).fit(train)
    second = MarkovBaseline(order=2, smoothing=0.5, backoff=2.0).fit(train)
    test = panel_of({"p": [0, 2, 3], "q": [1, 2, 4], "r": [7, 2, 4]})
    p1 = np.exp(first.predict(test).log_probs.astype(np.float64))
    p2 = np.exp(second.predict(test).log_probs.astype(np.float64))
    after_2 = lambda s: (3 + 0.5) / (6 + 0.5 * V) if s in (3, 4) else 0.5 / (6 + 0.5 * V)  # noqa: E731
    assert p2[2, 3] == pytest.approx((3 + 2 * after_2(3)) / (3 + 2), rel=1e-5)
    assert p2[2, 4] == pytest.approx(2 * after_2(4) / (3 + 2), rel=1e-5)
    assert p2[5, 4] == pytest.approx((3 + 2 * after_2(4)) / (3 + 2), rel=1e-5)
    assert p1[2, 3] == pytest.approx(p1[5, 3])  # order 1 cannot tell the two contexts apart
    np.testing.assert_allclose(p2[8], p1[8], rtol=1e-5)  # unseen context (7, 2): order 1
    np.testing.assert_allclose(p2[:2], p1[:2], rtol=1e-6)  # first and second years: order 1


def test_markov_smoothing_follows_the_valid_panel():
    train = panel_of({f"p{i}": [0, 1, 2, 3] for i in range(20)})
    same = MarkovBaseline(order=1).fit(train, panel_of({"v": [0, 1, 2, 3]}))
    other = MarkovBaseline(order=1).fit(train, panel_of({"v": [0, 5, 6, 7], "w": [0, 1, 8, 9]}))
    assert same.smoothing < other.smoothing


def test_feature_table_hand_computed():
    panel = panel_of(
        {"a": [5, 5, 7, 7], "b": [9]},
        education={"a": ["high_school", "high_school", "some_college", "some_college"], "b": ["graduate"]},
        years={"a": [2000, 2001, 2003, 2004], "b": [1990]},
    )
    f = feature_table(panel).set_index("person_id")
    a = f.loc["a"]
    assert a["current_state"].tolist() == [-1, 5, 5, 7]
    assert a["two_back_state"].tolist() == [-1, -1, 5, 5]
    assert a["tenure"].tolist() == [0, 1, 2, 1]
    assert a["years_in_panel"].tolist() == [0, 1, 3, 4]
    assert a["gap"].tolist() == [0, 1, 2, 1]
    assert a["education_change"].tolist() == [0, 0, 1, 0]
    assert f.loc["b", "current_state"] == -1 and f.loc["b", "education"] == "graduate"


def random_panel(seed: int, persons: int = 40):
    rng = np.random.default_rng(seed)
    return panel_of({f"{seed}-{i}": rng.integers(0, 30, rng.integers(1, 7)).tolist() for i in range(persons)})


@pytest.mark.parametrize(
    "model",
    [
        MarkovBaseline(order=1),
        MarkovBaseline(order=2),
        LogitBaseline(max_epochs=2),
        BagOfJobsBaseline(dim=8, hidden=16, max_epochs=2),
    ],
    ids=["markov1", "markov2", "logit", "bag_of_jobs"],
)
def test_every_person_year_gets_a_normalized_distribution(model):
    test = random_panel(2)
    test.records.loc[3, "state"] = V - 1  # a state no model saw in training
    pred = model.fit(random_panel(0), random_panel(1)).predict(test)
    pd.testing.assert_frame_equal(pred.table, transition_table(test))
    assert (pred.table["prev_state"] == -1).sum() == len(test.persons)
    assert pred.log_probs.shape == (len(test.records), V) and np.isfinite(pred.log_probs).all()
    pred.check_normalized(atol=1e-5)


def education_rule_panel(seed: int, persons: int):
    """State 10 exactly in the year education rises; otherwise one of 20-23 at random."""
    rng = np.random.default_rng(seed)
    careers, education = {}, {}
    for i in range(persons):
        change = rng.integers(1, 6)
        careers[f"{seed}-{i}"] = [10 if t == change else int(rng.integers(20, 24)) for t in range(6)]
        education[f"{seed}-{i}"] = ["high_school" if t < change else "some_college" for t in range(6)]
    return panel_of(careers, education)


def test_logit_learns_education_change_rule():
    train, valid, test = (education_rule_panel(s, n) for s, n in ((0, 300), (1, 60), (2, 100)))
    logit = LogitBaseline(lr=0.05, batch_size=256).fit(train, valid).predict(test)
    markov = MarkovBaseline(order=1).fit(train, valid).predict(test)
    rule = feature_table(test)["education_change"].to_numpy() > 0
    assert np.exp(logit.realized_log_prob()[rule]).mean() > 0.9
    assert mean_nll(logit) < mean_nll(markov) - 0.3


def alternating_panel(seed: int, persons: int):
    """Each career alternates two random jobs a, b, a, b, a: the next job is the one two steps back."""
    rng = np.random.default_rng(seed)
    pairs = [rng.choice(30, 2, replace=False).tolist() for _ in range(persons)]
    return panel_of({f"{seed}-{i}": [a, b, a, b, a] for i, (a, b) in enumerate(pairs)})


def test_bag_of_jobs_uses_earlier_jobs():
    train, valid, test = (alternating_panel(s, n) for s, n in ((0, 600), (1, 60), (2, 100)))
    bag = BagOfJobsBaseline(dim=32, hidden=64, lr=0.01, batch_size=256).fit(train, valid).predict(test)
    markov = MarkovBaseline(order=1).fit(train, valid).predict(test)
    later = bag.table.groupby("person_id").cumcount().to_numpy() >= 2
    assert np.exp(bag.realized_log_prob()[later]).mean() > 0.5
    assert mean_nll(bag) < mean_nll(markov) - 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda s: LogitBaseline(max_epochs=2, seed=s),
        lambda s: BagOfJobsBaseline(dim=8, hidden=16, max_epochs=2, seed=s),
    ],
)
def test_trained_baselines_are_deterministic(make):
    train, valid, test = random_panel(0), random_panel(1), random_panel(2)
    a, b, c = (make(s).fit(train, valid).predict(test).log_probs for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
