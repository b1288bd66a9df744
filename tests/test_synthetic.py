"""Synthetic worlds: valid panels, calibration to the NLSY79 facts, an exact oracle, determinism, synth output."""

import json
from dataclasses import asdict, replace
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.panel.career_format import read_career
from lit_career.panel.careers import EDUCATION_LEVELS
from lit_career.panel.taxonomy import vocabulary
from lit_career.synthetic.oracle import oracle_log_probs
from lit_career.synthetic.world import (
    NLSY79_SWITCH_BY_AGE,
    World,
    WorldConfig,
    generate_population,
    load_world_config,
    switch_rates_by_age,
    switch_targets,
    world_of,
)

FACTS = files("lit_career.resources").joinpath("facts", "nlsy79_cpsocc_annual_switch_rates_by_age.csv")
REPO = Path(__file__).resolve().parent.parent
N_OCC = 341


@pytest.fixture(scope="module")
def world():
    return world_of(WorldConfig())


@pytest.fixture(scope="module")
def survey(world):
    return world.sample("survey", 2000, seed=101)


@pytest.fixture(scope="module")
def resume(world):
    return world.sample("resume", 2000, seed=102)


@pytest.fixture(scope="module")
def oracle(world, survey, resume):
    """The oracle's log-probabilities for the survey and resume samples, by population name."""
    return {pop.name: oracle_log_probs(world, pop.panel) for pop in (survey, resume)}


def _ages(panel) -> np.ndarray:
    r = panel.records
    return r["year"].to_numpy() - panel.persons["birth_year"].reindex(r["person_id"]).to_numpy(dtype=float)


def test_populations_are_career_panels_over_the_vocabulary(survey, resume):
    vocab = vocabulary()
    for pop in (survey, resume):
        r, persons = pop.panel.records, pop.panel.persons
        assert r["state"].between(0, len(vocab) - 1).all()
        assert not (r["state"] == vocab.special("unmapped")).any()
        assert set(r["education"].astype(str)) <= set(EDUCATION_LEVELS)
        assert not r.duplicated(["person_id", "year"]).any()
        assert len(pop.types) == len(persons) and persons["birth_year"].notna().all()
    years = survey.panel.records.groupby("person_id")["year"]
    assert (years.diff().dropna() == 1).all() and (years.size() == 22).all()  # yearly rounds 1979-2000
    assert survey.panel.persons[["sex", "race", "location"]].notna().all().all()
    gaps = resume.panel.records.groupby("person_id")["year"].diff().dropna()
    assert (gaps > 1).mean() > 0.1  # irregular years
    assert resume.panel.persons[["sex", "race", "location"]].isna().all().all()


def test_same_seed_same_world_and_panel_other_seed_differs():
    small = replace(WorldConfig(), calibration_persons=300, calibration_rounds=1)
    a, b = (World(small).sample("survey", 200).panel for _ in range(2))  # two builds of the world
    other = generate_population("survey", persons=200, seed=1, config=small)
    pd.testing.assert_frame_equal(a.records, b.records)
    pd.testing.assert_frame_equal(a.persons, b.persons)
    assert not a.records["state"].equals(other.records["state"])


def test_facts_constant_matches_the_vendored_facts_file():
    with FACTS.open("rb") as f:
        facts = pd.read_csv(f)
    assert np.allclose(facts["switch_occ1990dd"], [band[3] for band in NLSY79_SWITCH_BY_AGE])
    assert np.allclose(facts["n_pairs"], [band[2] for band in NLSY79_SWITCH_BY_AGE])


def test_switch_rates_follow_raw_nlsy79_by_age(world, survey):
    rates = switch_rates_by_age(survey.panel)  # a sample other than the calibration sample
    assert (rates["n_pairs"] > 500).all()
    assert np.abs(rates["switch_rate"] - rates["nlsy79_raw"]).max() < 0.05
    assert rates["switch_rate"].is_monotonic_decreasing or np.diff(rates["switch_rate"]).max() < 0.02


def test_true_mobility_option_gives_16_to_20_percent():
    config = replace(WorldConfig(), mobility="true")
    panel = world_of(config).sample("survey", 2000, seed=103).panel
    rates = switch_rates_by_age(panel)
    overall = np.average(
        rates["switch_rate"], weights=[band[2] for band in NLSY79_SWITCH_BY_AGE]
    )  # NLSY79 age mix
    assert 0.16 <= overall <= 0.20
    assert np.abs(rates["switch_rate"] - switch_targets(config)).max() < 0.04


def test_state_shares_and_structure_are_realistic(survey):
    vocab, r = vocabulary(), survey.panel.records
    state, age = r["state"].to_numpy(), _ages(survey.panel)
    school = state == vocab.special("education")
    assert school[age <= 18].mean() > 0.4 and school[age >= 30].mean() < 0.05
    assert 0.7 < (state[age >= 30] < N_OCC).mean() < 0.9
    for key in ("no_job", "unemployed", "not_in_labor_force", "military"):
        assert 0.003 < (state == vocab.special(key)).mean() < 0.15, key
    female = survey.panel.persons["sex"].reindex(r["person_id"]).to_numpy() == "female"
    nilf = state == vocab.special("not_in_labor_force")
    assert nilf[female].mean() > 1.5 * nilf[~female].mean()
    # education rises with age: some bachelor's degrees by 30
    assert (r["education"][age >= 30] >= "bachelors").mean() > 0.1


def test_careers_carry_structure_beyond_first_order_markov(survey):
    r = survey.panel.records
    s, pid = r["state"].to_numpy(), r["person_id"].to_numpy()
    same = pid[1:] == pid[:-1]
    moved = same & (s[1:] < N_OCC) & (s[:-1] < N_OCC) & (s[1:] != s[:-1])
    g12 = vocabulary().group_of(12)
    assert (g12[s[1:]] == g12[s[:-1]])[moved].mean() > 0.5  # moves mostly within the 12-group
    # A -> B -> A: returns far more often than a first-order chain fitted to the same data predicts
    triple = moved[:-1] & same[1:] & (s[2:] < N_OCC)
    a, b, c = s[:-2][triple], s[1:-1][triple], s[2:][triple]
    counts = pd.crosstab(s[:-1][same], s[1:][same])
    markov = counts.div(counts.sum(axis=1), axis=0)
    predicted = markov.stack().reindex(list(zip(b, a, strict=True))).fillna(0).to_numpy()
    assert (c == a).mean() > 2 * predicted.mean()
    # duration dependence: the longer in the job, the likelier to stay
    spell = (pd.Series(s != np.r_[-1, s[:-1]]) | pd.Series(np.r_[True, ~same])).cumsum()
    duration = pd.Series(1, index=r.index).groupby(spell).cumsum().to_numpy()
    stay = s[1:] == s[:-1]
    age = _ages(survey.panel)[:-1]
    both = same & (s[1:] < N_OCC) & (s[:-1] < N_OCC) & (age > 26) & (age <= 32)
    assert stay[both & (duration[:-1] >= 4)].mean() > stay[both & (duration[:-1] == 1)].mean() + 0.1


def _grouped_chi2(panel, probs: np.ndarray) -> float:
    """z-score of a chi-square comparing observed and oracle-expected next-state counts.

    Records are grouped by their history (first record; previous occupation's 12-group; previous
    special state) and outcomes are binned (stay, same-group move, other-group move, each special
    state, return to the occupation two records back). Expected counts sum the oracle's probabilities.
    """
    vocab = vocabulary()
    s, pid = panel.records["state"].to_numpy(), panel.records["person_id"].to_numpy()
    n, V = probs.shape
    first = np.r_[True, pid[1:] != pid[:-1]]
    prev = np.where(first, -1, np.r_[-1, s[:-1]])
    prev2 = np.where(first | np.r_[True, first[:-1]], -1, np.r_[-1, -1, s[:-2]])
    g12 = np.r_[vocab.group_of(12), -1]
    group = np.where(prev < 0, 0, np.where(prev < N_OCC, g12[prev], 12 + prev - N_OCC + 1))
    bins = np.where(g12[None, :V] == g12[prev][:, None], 1, 2)
    bins[:, N_OCC:] = 3 + np.arange(V - N_OCC)
    rows = np.flatnonzero(prev >= 0)
    bins[rows, prev[rows]] = 0
    ret = np.flatnonzero((prev2 >= 0) & (prev2 < N_OCC) & (prev2 != prev))
    bins[ret, prev2[ret]] = V - N_OCC + 3
    n_bins = V - N_OCC + 4
    expected, observed = np.zeros((group.max() + 1, n_bins)), np.zeros((group.max() + 1, n_bins))
    for b in range(n_bins):
        np.add.at(expected[:, b], group, np.where(bins == b, probs, 0).sum(1))
        np.add.at(observed[:, b], group, bins[np.arange(n), s] == b)
    keep = expected >= 5
    chi2 = ((observed - expected) ** 2 / np.where(keep, expected, 1))[keep].sum()
    df = keep.sum() - keep.any(1).sum()
    return (chi2 - df) / np.sqrt(2 * df)


def test_oracle_rows_are_distributions_and_match_empirical_frequencies(world, survey, resume, oracle):
    for pop in (survey, resume):
        log_p = oracle[pop.name]
        assert log_p.shape == (len(pop.panel.records), len(vocabulary()))
        assert np.allclose(np.exp(log_p).sum(1), 1.0, atol=1e-9)
        assert np.isneginf(log_p[:, vocabulary().special("unmapped")]).all()
        assert _grouped_chi2(pop.panel, np.exp(log_p)) < 4  # about p > 3e-5
        # the filter must matter: mixing types with the prior only is rejected by the same test
        prior = world.type_prior(pop.name)
        n_persons = len(pop.panel.persons)
        no_filter = sum(
            w * np.exp(oracle_log_probs(world, pop.panel, types=np.full(n_persons, k)))
            for k, w in enumerate(prior)
        )
        assert _grouped_chi2(pop.panel, no_filter) > 20


def test_knowing_the_latent_type_lowers_perplexity(world, survey, oracle):
    target = survey.panel.records["state"].to_numpy()
    rows = np.arange(len(target))
    marginal = oracle["survey"][rows, target].mean()
    conditional = oracle_log_probs(world, survey.panel, types=survey.types)[rows, target].mean()
    assert conditional > marginal


def test_generate_population_rejects_unknown_population():
    with pytest.raises(ValueError, match="unknown population"):
        generate_population("census", persons=10)


def test_oracle_rejects_panels_it_cannot_score(world, survey):
    panel = survey.panel.subset(survey.panel.persons.index[:5])
    panel.records["education"] = pd.NA
    with pytest.raises(ValueError, match="synthetic panel"):
        oracle_log_probs(world, panel)


def test_synth_command_writes_reloadable_populations(tmp_path, capsys):
    config = replace(WorldConfig(), calibration_persons=300, calibration_rounds=1)
    config.populations = {
        "survey": replace(config.populations["survey"], persons=60),
        "resume": replace(config.populations["resume"], persons=80),
    }
    sizes = {"survey": 60, "resume": 80}
    world_file, out = tmp_path / "world.yaml", tmp_path / "out"
    world_file.write_text(yaml.safe_dump(json.loads(json.dumps(asdict(config)))))
    main(["synth", "--world", str(world_file), "--out_dir", str(out)])  # as on the command line
    assert "oracle_test_perplexity" in capsys.readouterr().out
    world = world_of(config)
    for name in ("survey", "resume"):
        records = pd.read_parquet(out / name / "records.parquet")
        persons = pd.read_parquet(out / name / "persons.parquet")
        assert len(persons) == sizes[name] and records["person_id"].nunique() == sizes[name]
        assert set(persons["split"]) == {"train", "valid", "test"}
        career = read_career(out / name / "career")
        assert len(career.records) == len(records)
    # the written world reproduces the oracle exactly, without recalibrating
    reloaded = load_world_config(out / "world.yaml")
    assert reloaded.stay_by_age == world.config.stay_by_age
    panel = world.sample("survey", 20).panel
    assert np.array_equal(oracle_log_probs(reloaded, panel), oracle_log_probs(world, panel))


def test_default_yaml_is_the_default_config_and_bad_yaml_is_an_input_error(tmp_path):
    assert load_world_config(REPO / "configs" / "synth" / "default.yaml") == WorldConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("mobility: sometimes\n")
    with pytest.raises(InputError, match="bad.yaml"):
        load_world_config(bad)
