"""Multi-year forecasts: every model samples what it scores, the estimates match exact multi-year values
(Markov-1 by matrix powers, the oracle by its forward filter) and wrong samplers fail that check, and the
``forecast`` command writes, resumes and refuses bad input."""

import inspect
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lit_career.baselines.career import SIZES, CareerTransformer, predict_panel
from lit_career.baselines.career_data import build_covariate_vocab
from lit_career.baselines.markov import MarkovBaseline
from lit_career.baselines.neural import BagOfJobsBaseline, LogitBaseline
from lit_career.cli import main
from lit_career.forecast.command import forecast
from lit_career.forecast.inputs import cut, education_codes, forecast_years, realized_states
from lit_career.forecast.lm import LastTransitions, LMForecaster
from lit_career.forecast.metrics import by_year, categories, forecast_set, groupings
from lit_career.forecast.simulate import draw, simulate
from lit_career.forecast.spec import ForecastSpec
from lit_career.panel.careers import EDUCATION_LEVELS, assign_splits, make_panel, subsample_persons
from lit_career.panel.nlsy79 import load_nlsy79
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.vocabularies import load_vocabulary
from lit_career.runs.finished import HEAD_CHECKPOINT, Row
from lit_career.runs.preemption import STOPPED_EXIT_CODE
from lit_career.runs.row import run_row
from lit_career.runs.spec import LMArgs, RowSpec, load_row
from lit_career.synthetic.oracle import Oracle, oracle_log_probs, run_filter
from lit_career.synthetic.world import SCHOOL_YEARS, SECTORS, WorldConfig, _History, _level, world_of

REPO = Path(__file__).resolve().parents[1]
V = len(vocabulary())
FORECAST_DEFAULTS = {k: v.default for k, v in inspect.signature(forecast).parameters.items()}


@pytest.fixture(scope="module")
def nlsy79():
    """400 bundled NLSY79 persons, split by person."""
    return assign_splits(subsample_persons(load_nlsy79(unknown_codes="drop"), 400))


@pytest.fixture(scope="module")
def world():
    return world_of(replace(WorldConfig(), calibration_persons=300, calibration_rounds=1))


class SkipsYears:
    """A wrong sampler: it never appends the drawn state, so every year is drawn from the cutoff's state."""

    def __init__(self, simulator):
        self.simulator = simulator

    def step(self, year, education):
        return self.simulator.step(year, education)

    def advance(self, states):
        pass


class YearLate(SkipsYears):
    """A wrong sampler: it rolls the covariates one year too far."""

    def step(self, year, education):
        return self.simulator.step(year + 1, education)

    def advance(self, states):
        self.simulator.advance(states)


def z_score(futures, exact, realized):
    """(estimated - exact) mean log score of the realized states over its Monte Carlo error, per year."""
    scores = []
    for h in range(exact.shape[1]):
        person = np.flatnonzero(realized[:, h] >= 0)
        state = realized[person, h]
        estimate = futures.probs[person, h, state].astype(np.float64)
        se = np.sqrt(np.sum((futures.mc_se[person, h, state] / estimate) ** 2)) / len(person)
        se = max(se, 1e-6)  # the first year is exact up to float32 storage
        scores.append((np.log(estimate).mean() - np.log(exact[person, h, state]).mean()) / se)
    return np.array(scores)


def test_draws_follow_the_table_and_never_a_zero_probability_state():
    table = np.array([[0.0, 0.2, 0.0, 0.8, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0, 0.0]])
    row = np.repeat([0, 1, 2], 40_000)
    drawn = draw(table, row, np.random.default_rng(0)).reshape(3, -1)
    counts = np.stack([np.bincount(d, minlength=5) for d in drawn]) / drawn.shape[1]
    assert (counts[table == 0] == 0).all()
    np.testing.assert_allclose(counts, table, atol=0.01)


def test_inputs_use_the_survey_years_and_roll_education(nlsy79):
    years = forecast_years(nlsy79, 1990, 10)
    assert years.tolist() == [1991, 1992, 1993, 1994, 1996, 1998, 2000]  # two-yearly after 1994
    records = pd.DataFrame(
        {
            "person_id": ["a"] * 4 + ["b"] * 2,
            "year": [1989, 1990, 1992, 1994, 1992, 1994],
            "state": [1, 2, 3, 4, 5, 6],
            "education": ["high_school", None, "bachelors", None, "graduate", "graduate"],
        }
    )
    panel = make_panel(records, pd.DataFrame(index=["a", "b"]), "x")
    history = cut(panel, 1990)
    assert list(history.persons.index) == ["a"]  # b has no record by the cutoff
    held, given = (
        education_codes(panel, history, np.array([1992, 1994]), mode) for mode in ("hold", "given")
    )
    assert held.tolist() == [[1, 1]] and given.tolist() == [[3, 3]]  # the 1994 record's NA keeps 1992's
    assert realized_states(panel, history, np.array([1992, 1993, 1994])).tolist() == [[3, -1, 4]]


@pytest.fixture(scope="module")
def fitted(nlsy79):
    """Each NLSY79 model fitted on the 400 persons (two epochs for the softmax ones, CAREER untrained)."""
    train, valid = nlsy79.split("train"), nlsy79.split("valid")
    torch.manual_seed(0)
    return {
        "markov1": MarkovBaseline(order=1).fit(train, valid),
        "markov2": MarkovBaseline(order=2).fit(train, valid),
        "logit": LogitBaseline(max_epochs=2).fit(train, valid),
        "bag_of_jobs": BagOfJobsBaseline(max_epochs=2).fit(train, valid),
        "career": CareerTransformer(build_covariate_vocab([train]), **SIZES["tiny"]).eval(),
    }


def run_steps(
    simulator, years: np.ndarray, education: np.ndarray, rng: np.random.Generator
) -> tuple[list, list]:
    """Step ``simulator`` through ``years`` by hand: each year's drawn states and every path's distribution."""
    drawn, probs = [], []
    for h, year in enumerate(years):
        table, row = simulator.step(int(year), education[:, h])
        drawn.append(draw(table, row, rng))
        probs.append(table[row])
        simulator.advance(drawn[-1])
    return drawn, probs


def path_panel(history, years, education, drawn, paths):
    """Each sampled path as a person of its own: the history, then the drawn states with the years and the
    education the sampler gave (persons ``<id>-<path>``, in path order)."""
    records, persons = [], []
    for i, pid in enumerate(history.persons.index):
        past = history.records[history.records["person_id"] == pid].astype({"education": "string"})
        for k in range(paths):
            future = pd.DataFrame({"year": years, "state": drawn[i * paths + k]})
            future["education"] = np.asarray(EDUCATION_LEVELS, dtype=object)[education[i]]
            records.append(pd.concat([past, future]).assign(person_id=f"{pid}-{k:03d}"))
            persons.append(history.persons.loc[[pid]].set_axis([f"{pid}-{k:03d}"]))
    return make_panel(pd.concat(records), pd.concat(persons).drop(columns="split", errors="ignore"), "paths")


@pytest.mark.parametrize("name", ["markov1", "markov2", "logit", "bag_of_jobs", "career", "oracle"])
def test_every_year_is_what_the_model_predicts_for_the_path_so_far(name, nlsy79, fitted, world):
    """Sampling appends the drawn states and rolls the covariates as a panel of those paths would have them:
    each year's distribution equals the model's prediction for that record of the path (CAREER's cache
    included; the oracle's filter, weighing the types by the drawn states, included)."""
    if name == "oracle":
        panel = world.sample("survey", 6, seed=3).panel
        model, cutoff = Oracle(world, "survey", "given"), 1984
    else:
        panel, model, cutoff = nlsy79.split("test"), fitted[name], 1990
    years = forecast_years(panel, cutoff, 10)
    history = cut(panel, cutoff)
    history = history.subset(history.persons.index[:5])
    education = education_codes(panel, history, years, "given")
    simulator, rng, paths = model.simulator(history, 4), np.random.default_rng(0), 4
    drawn, probs = run_steps(simulator, years, education, rng)
    paths_panel = path_panel(history, years, education, np.stack(drawn, 1), paths)
    if name == "oracle":
        predicted = oracle_log_probs(world, paths_panel, population="survey")
    elif name == "career":
        predicted = predict_panel(model, paths_panel).log_probs
    else:
        predicted = model.predict(paths_panel).log_probs
    future = paths_panel.records["year"].isin(years).to_numpy()
    expected = np.exp(predicted[future]).reshape(len(history.persons) * paths, len(years), V)
    np.testing.assert_allclose(np.stack(probs, 1), expected, atol=2e-6)


def test_markov1_forecast_matches_matrix_powers_and_wrong_samplers_fail(nlsy79):
    train, test = nlsy79.split("train"), nlsy79.split("test")
    model = MarkovBaseline(order=1).fit(train, nlsy79.split("valid"))
    years = forecast_years(nlsy79, 1990, 10)
    history = cut(test, 1990)
    education = education_codes(test, history, years, "hold")
    matrix = model.probs(np.arange(V))
    last = history.records.groupby("person_id")["state"].last().to_numpy()
    exact = np.stack([np.linalg.matrix_power(matrix, h + 1)[last] for h in range(len(years))], 1)
    realized = realized_states(test, history, years)
    right = simulate(model.simulator(history, 2000), years, education, 2000, np.random.default_rng(1))
    assert np.abs(z_score(right, exact, realized)).max() < 4
    skips = simulate(
        SkipsYears(model.simulator(history, 2000)), years, education, 2000, np.random.default_rng(1)
    )
    assert np.abs(z_score(skips, exact, realized)[1:]).min() > 4  # every year after the first is off


def _schooling_posterior(world, records, birth_year, population="survey") -> dict[int, float]:
    """Years of schooling at the next record -> posterior probability, replaying the world's rule for each
    attainment it could have drawn against the levels seen (one person's records)."""
    school = world.special[SECTORS.index("education") - 1]
    shares = world.config.populations[population].education_shares
    posterior: dict[int, float] = {}
    for draw_years, share in zip(SCHOOL_YEARS, shares, strict=True):
        years = min(draw_years, max(records["year"].iloc[0] - birth_year - 6, 0))
        consistent = True
        for state, level in zip(records["state"], records["education"].cat.codes, strict=True):
            consistent &= _level(np.array([years]))[0] == level
            years += state == school
        if consistent:
            posterior[years] = posterior.get(years, 0.0) + share
    total = sum(posterior.values())
    return {years: p / total for years, p in posterior.items()}


def _exact_two_years(world, history, years, population="survey"):
    """The oracle's exact distributions of the first two forecast years [persons, 2, V]: a sum over every state
    of the first year, for each worker type (weighed by the filter's posterior at the cutoff) and each
    schooling the levels seen allow (weighed by its posterior)."""
    start = run_filter(world, history, population=population)
    school, k = world.special[SECTORS.index("education") - 1], len(world.type_names)
    rows, types = np.arange(world.V * k), np.tile(np.arange(k), world.V)
    s1 = np.repeat(np.arange(world.V), k)
    out = np.zeros((len(history.persons), 2, world.V))
    for i, pid in enumerate(history.persons.index):
        w = np.exp(start.log_w[i] - start.log_w[i].max())
        w /= w.sum()
        statics = {key: np.repeat(value[i : i + 1], len(rows)) for key, value in start.statics.items()}
        records = history.records[history.records["person_id"] == pid]
        birth_year = int(history.persons.loc[pid, "birth_year"])
        for schooling, p in _schooling_posterior(world, records, birth_year, population).items():
            fields = ("state", "spell_start", "year", "last_occupation")
            copies = _History(*(np.repeat(getattr(start.history, f)[i : i + 1], len(rows)) for f in fields))
            level = np.full(k, _level(np.array([schooling]))[0], dtype=np.int64)
            first = world.probs(copies.features(rows[:k], np.full(k, years[0]), level, statics), np.arange(k))
            copies.advance(rows, s1, np.full(len(rows), years[0]), world.n_occ)
            level = _level(schooling + (s1 == school)).astype(np.int64)
            second = world.probs(copies.features(rows, np.full(len(rows), years[1]), level, statics), types)
            joint = first.T.ravel()[:, None] * second  # P(s1 | k) P(s2 | s1, k), rows (s1, k)
            out[i, 0] += p * (w @ first)
            out[i, 1] += p * (joint.reshape(world.V, k, world.V) * w[None, :, None]).sum((0, 1))
    return out


def test_oracle_forecast_matches_its_exact_forward_filter_and_wrong_samplers_fail(world):
    """Cut at 1981 (ages 17-24): schooling still grows, so the oracle's own education is exercised too."""
    panel = world.sample("survey", 40, seed=7).panel
    years = forecast_years(panel, 1981, 2)
    history = cut(panel, 1981)
    exact = _exact_two_years(world, history, years)
    education = education_codes(panel, history, years, "given")
    realized = realized_states(panel, history, years)
    oracle = Oracle(world, "survey", "world")
    right = simulate(oracle.simulator(history, 1000), years, education, 1000, np.random.default_rng(2))
    np.testing.assert_allclose(right.probs[:, 0], exact[:, 0], atol=1e-6)  # the first year is exact
    assert abs(z_score(right, exact, realized)[1]) < 4
    for wrong in (SkipsYears, YearLate):
        futures = simulate(
            wrong(oracle.simulator(history, 1000)), years, education, 1000, np.random.default_rng(2)
        )
        assert abs(z_score(futures, exact, realized)[1]) > 4, wrong.__name__


def test_group_sets_and_metrics_by_year():
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.95, 0.05, 0.0, 0.0]])
    assert forecast_set(probs, 0.9).tolist() == [[True, True, True, False], [True, False, False, False]]
    groups = categories(vocabulary())
    assert len(groups.names) == 12 + 6 and groups.names[12] == "No job reported"
    no_job, clerk = vocabulary().special("no_job"), int(np.flatnonzero(groups.of_state == 4)[0])
    states = np.full((2, 4, 1), clerk, np.int16)
    states[1, :3] = no_job
    dist = np.zeros((2, 1, V), np.float32)
    dist[0, 0, clerk], dist[1, 0, [clerk, no_job]] = 1.0, [0.25, 0.75]
    table = by_year(
        states,
        dist,
        np.zeros_like(dist),
        np.array([[clerk], [no_job]]),
        np.array([clerk, clerk]),
        np.array([1991]),
        1990,
        vocabulary(),
        alpha=0.5,
        level=0.9,
    )
    first = table.iloc[0]
    assert first["log_score"] == pytest.approx(np.log(0.75) / 2)
    assert first["log_score_counts"] == pytest.approx(np.mean(np.log(np.array([4.5, 3.5]) / (4 + 0.5 * V))))
    assert first["no_job_auc"] == 1.0 and first["switch_auc"] == 1.0 and first["coverage"] == 1.0


def test_categories_follow_the_vocabulary(tmp_path):
    """Forecast categories are the vocabulary's own groups (the main grouping first), then the non-work states."""
    occ = vocabulary()
    assert groupings(occ) == ["group12", "group17"] and len(categories(occ, "group17").names) == 17 + 6
    onet = load_vocabulary("onet_soc_2010")
    groups = categories(onet)
    table = onet.table[~onet.table["is_special"].to_numpy(bool)]
    assert groupings(onet) == ["group"] and len(groups.names) == table["group"].nunique() + 6
    named = np.array(groups.names)[groups.of_state[: len(table)]]
    assert (named == table["group_title"].to_numpy()).all()  # every occupation in its SOC major group
    some = pd.DataFrame(
        {"code": ["a1", "a2", "b1"], "title": ["A one", "A two", "B one"], "group": ["A", "A", ""]}
    )
    mine = categories(load_vocabulary(str(_written(tmp_path / "some.csv", some))))
    assert mine.names[:2] == ["A", "No group"] and mine.of_state[:3].tolist() == [0, 0, 1]
    bare = load_vocabulary(str(_written(tmp_path / "bare.csv", some.drop(columns="group"))))
    assert groupings(bare) == [] and categories(bare).names[0] == "Any occupation"
    assert categories(bare).of_state[:3].tolist() == [0, 0, 0] and len(categories(bare).names) == 1 + 6


def _written(path: Path, table: pd.DataFrame) -> Path:
    table.to_csv(path, index=False)
    return path


def run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code, capsys.readouterr().err


def test_forecast_command_writes_resumes_and_refuses_bad_input(tmp_path, capsys, monkeypatch):
    row = str(REPO / "configs" / "rows" / "nlsy79" / "markov1.yaml")
    args = ["forecast", "--row", row, "--cutoff", "1990", "--paths", "20", "--max_persons", "5"]
    args += ["--shard_persons", "2", "--out_dir", str(tmp_path)]
    main(args)
    paths = pd.read_parquet(tmp_path / "paths")
    assert len(paths) == 5 * 20 and [c for c in paths if c.startswith("state_")][-1] == "state_2000"
    distributions = pq.read_table(tmp_path / "distributions")
    assert len(distributions) == 5 * 7
    probs = distributions["probs"].combine_chunks().flatten().to_numpy().reshape(35, V)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    groups = pd.read_parquet(tmp_path / "groups")
    np.testing.assert_allclose(groups.groupby(["person_id", "year", "grouping"])["prob"].sum(), 1, atol=1e-5)
    assert {"metrics.json", "by_year.csv", "shares.csv", "shares.png", "by_year.png"} <= {
        p.name for p in tmp_path.iterdir()
    }
    first = (tmp_path / "paths" / "part-00000.parquet").read_bytes()
    (tmp_path / "paths" / "part-00001.parquet").unlink()  # as if stopped during the second shard
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    main([*args, "--wandb", "true"])  # W&B is no setting of the forecast: the folder is continued
    assert pd.read_parquet(tmp_path / "paths").equals(paths)  # the same draws again
    (media,) = (tmp_path / "wb").glob("wandb/offline-run-*/files/media")
    assert {p.name.split("_0_")[0] for p in media.glob("images/forecast/*.png")} == {
        "shares_plot",
        "by_year_plot",
    }
    for name in ("by_year", "shares"):
        (logged,) = media.glob(f"table/forecast/{name}_*.table.json")
        assert len(json.loads(logged.read_text())["data"]) == len(pd.read_csv(tmp_path / f"{name}.csv"))
    assert (tmp_path / "paths" / "part-00000.parquet").read_bytes() == first  # done shards are kept
    other = tmp_path / "seed1"
    main([*args[:-1], str(other), "--seed", "1", "--reference", str(tmp_path)])  # against the first's bands
    ours, theirs = (pd.read_csv(f / "shares.csv") for f in (other, tmp_path))
    inside = (theirs["low"] <= ours["forecast"]) & (ours["forecast"] <= theirs["high"])
    assert ours["inside_reference"].equals(inside) and 0 < inside.mean() < 1
    no_job = ours["category"] == "No job reported"
    metrics = json.loads((other / "metrics.json").read_text())
    assert metrics["no_job_inside_reference"] == inside[no_job].all()
    capsys.readouterr()
    code, err = run(
        [*args[:-1], str(tmp_path / "short"), "--horizon", "2", "--reference", str(tmp_path)], capsys
    )
    assert code == 2 and "reference forecasts the years" in err and err.count("\n") == 1
    bad = {
        "cutoff after the last year": ["--cutoff", "2000"],
        "horizon 0": ["--horizon", "0"],
        "no paths": ["--paths", "0"],
        "other settings in the folder": ["--seed", "1"],
        "the oracle's education": ["--education", "world"],
        "a reference that is no forecast": ["--reference", str(tmp_path / "paths")],
    }
    for what, change in bad.items():
        code, err = run([*args, *change], capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, what


def test_forecast_samples_a_finished_rows_fit_over_its_vocabulary(tmp_path, monkeypatch, capsys):
    """A finished row's saved fit is the one sampled (none refitted), over the row's own vocabulary and groups."""
    monkeypatch.chdir(REPO)  # the O*NET example row reads its panel by a relative path
    row = "configs/rows/onet_example/markov1.yaml"
    args = ["forecast", "--row", row, "--cutoff", "1990", "--paths", "20", "--max_persons", "4"]
    args += ["--root", str(tmp_path / "rows"), "--shard_persons", "2"]
    main([*args, "--out_dir", str(tmp_path / "fitted")])
    code, err = run([*args, "--out_dir", str(tmp_path / "parted"), "--part", "1", "--parts", "2"], capsys)
    assert code == 2 and "would each fit it" in err  # parallel parts need a fitted model
    run_row(load_row(REPO / row, root=tmp_path / "rows"))
    finished = tmp_path / "rows" / "onet_example" / "markov1"
    main([*args, "--out_dir", str(tmp_path / "loaded")])
    metrics = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("fitted", "loaded")}
    assert metrics["fitted"]["model"].startswith("fitted")
    assert metrics["loaded"]["model"] == f"finished row {finished}"
    saved, used = (load_file(folder / "model.safetensors") for folder in (finished, tmp_path / "loaded"))
    assert saved.keys() == used.keys() and all(torch.equal(v, saved[k]) for k, v in used.items())
    onet = load_vocabulary("onet_soc_2010")
    groups = pd.read_parquet(tmp_path / "loaded" / "groups")
    assert set(groups["grouping"]) == {"group"} and set(groups["category"]) == set(categories(onet).names)
    probs = pq.read_table(tmp_path / "loaded" / "distributions")["probs"]
    assert probs.type.list_size == len(onet)
    shares = pd.read_csv(tmp_path / "loaded" / "shares.csv")
    assert "Management Occupations" in set(shares["category"])
    for part in ("1", "0"):  # two processes' parts of one folder; the last to finish scores
        main([*args, "--out_dir", str(tmp_path / "parted"), "--part", part, "--parts", "2"])
        assert (tmp_path / "parted" / "metrics.json").is_file() == (part == "0")
    parted, loaded = (pd.read_parquet(tmp_path / folder / "paths") for folder in ("parted", "loaded"))
    assert parted.equals(loaded)


def test_an_lm_row_is_forecast_on_its_heads_panel_and_several_need_a_source(tmp_path, capsys):
    """The panel is the one the row's head read (``lm.data``, ``data.init_args`` head overrides over it)."""
    rows = REPO / "configs" / "rows" / "synthetic"
    for name in ("llm_tiny_two_stage", "llm_tiny_pooled_likelihood"):  # the survey: lm.data / head overrides
        spec = ForecastSpec(**FORECAST_DEFAULTS | {"row": rows / f"{name}.yaml", "cutoff": 1990}).row_spec()
        source = spec.source
        assert (source.kind, source.population, source.persons) == ("synthetic", "survey", 10000)
    pooled = tmp_path / "pooled.yaml"
    two = [{"kind": "synthetic", "population": p, "persons": 100, "name": p} for p in ("survey", "resume")]
    lm = {"head": "configs/fit/head/two_stage.yaml", "data": {"sources": two}}
    pooled.write_text(yaml.safe_dump({"name": "pooled", "dataset": "synthetic", "model": "lm", "lm": lm}))
    code, err = run(["forecast", "--cutoff", "1990", "--row", str(pooled)], capsys)
    assert code == 2 and "a pooled LM" in err and "--source" in err


@pytest.fixture(scope="module")
def lm_row(tmp_path_factory) -> RowSpec:
    """A finished tiny two-stage LM row on 40 NLSY79 persons (three fine-tuning steps, two head epochs)."""
    lm = LMArgs(
        head=REPO / "configs/fit/head/two_stage.yaml",
        finetune=REPO / "configs/fit/lm/lora_tiny_cpu.yaml",
        data={"max_persons": 40, "max_length": 512},
        finetune_overrides={"trainer.max_steps": 3},
        head_overrides={"trainer.max_epochs": 2},
    )
    spec = RowSpec(name="llm_tiny", dataset="nlsy79", model="lm", root=tmp_path_factory.mktemp("rows"), lm=lm)
    run_row(spec)
    return spec


def test_an_lm_row_samples_what_its_head_predicts_for_the_path_so_far(lm_row, nlsy79):
    """Each year's distribution is the head's prediction for that record of the path written out as a panel:
    the drawn titles and the rolled covariates are the resume text the head reads."""
    panel = nlsy79.split("test")
    years = forecast_years(panel, 1990, 10)
    history = cut(panel, 1990)
    education = education_codes(panel, history, years, "given")
    known = np.flatnonzero((education >= 0).all(1))[:3]  # the path panel below writes known levels only
    history, education = history.subset(history.persons.index[known]), education[known]
    paths, rng = 3, np.random.default_rng(0)
    simulator = LMForecaster.load(lm_row).simulator(history, paths)
    drawn, probs = run_steps(simulator, years, education, rng)
    paths_panel = path_panel(history, years, education, np.stack(drawn, 1), paths)
    paths_panel = replace(paths_panel, source=history.source)  # the resume's header names the source
    predicted = Row.load(lm_row.root / "nlsy79" / "llm_tiny").predict(paths_panel)
    table = predicted.table.assign(row=np.arange(len(predicted.table)))
    order = table.set_index(["person_id", "year"])["row"]
    ids = [f"{p}-{k:03d}" for p in history.persons.index for k in range(paths)]
    expected = np.exp(predicted.log_probs[order.loc[[(i, y) for i in ids for y in years]].to_numpy()])
    np.testing.assert_allclose(np.stack(probs, 1), expected.reshape(len(ids), len(years), V), atol=1e-5)
    assert len({tuple(d) for d in np.stack(drawn, 1)}) > 1  # the paths differ


class SignalledTransitions(LastTransitions):
    """As if ``kill`` sent SIGTERM while the head predicts (Lightning has registered its handler by then)."""

    def predict_dataloader(self):
        os.kill(os.getpid(), signal.SIGTERM)
        return super().predict_dataloader()


def test_sigterm_while_an_lm_row_predicts_stops_the_process(lm_row, nlsy79):
    """Lightning's SIGTERM handler only notes the signal and its predict loop never looks: RequeueAtStepEnd stops
    the process at the batch end."""
    head = Row.load(lm_row.out_dir).model
    with pytest.raises(SystemExit) as stopped:
        head.predict(nlsy79.subset(nlsy79.persons.index[:2]), SignalledTransitions)
    assert stopped.value.code == STOPPED_EXIT_CODE


def test_forecast_command_samples_an_lm_row_and_refuses_an_incomplete_one(lm_row, tmp_path, capsys):
    row = tmp_path / "row.yaml"
    lm = {"head": str(lm_row.lm.head), "finetune": str(lm_row.lm.finetune), "data": lm_row.lm.data}
    settings = {"name": "llm_tiny", "dataset": "nlsy79", "model": "lm", "root": str(lm_row.root), "lm": lm}
    row.write_text(yaml.safe_dump(settings))
    args = ["forecast", "--row", str(row), "--cutoff", "1990", "--horizon", "2", "--max_persons", "2"]
    main([*args, "--out_dir", str(tmp_path / "out")])
    assert len(pd.read_parquet(tmp_path / "out" / "paths")) == 2 * 20  # the LM rows' default K
    capsys.readouterr()
    row.write_text(yaml.safe_dump(settings | {"lm": lm | {"data": {}}}))  # all of NLSY79: other test persons
    code, err = run([*args, "--out_dir", str(tmp_path / "whole")], capsys)
    assert code == 2 and "was tested on" in err and err.count("\n") == 1
    row.write_text(yaml.safe_dump(settings))
    (lm_row.root / "nlsy79" / "llm_tiny" / HEAD_CHECKPOINT).rename(tmp_path / "best.ckpt")
    try:
        code, err = run([*args, "--out_dir", str(tmp_path / "other")], capsys)
    finally:
        (tmp_path / "best.ckpt").rename(lm_row.root / "nlsy79" / "llm_tiny" / HEAD_CHECKPOINT)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "best.ckpt" in err and not (tmp_path / "other").exists()
