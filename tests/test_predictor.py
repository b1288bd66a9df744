from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from lit_career.errors import InputError
from lit_career.llm.backbone import load_causal_lm, train_tiny_tokenizer
from lit_career.llm.head import OccupationHead
from lit_career.llm.scoring import ClosedSetScorer, normalize
from lit_career.llm.transition_data import TransitionData
from lit_career.panel.predictions import Predictions
from lit_career.panel.table import ColumnMap
from lit_career.panel.taxonomy import vocabulary
from lit_career.sources import PanelSource
from lit_career.two_stage import two_stage_log_probs

REPO = Path(__file__).resolve().parent.parent
STATES = np.arange(0, 160, 20)  # eight occupations; the planted rule moves each to the next, cyclically
V = len(vocabulary())


@pytest.fixture(scope="module")
def planted_csv(tmp_path_factory) -> Path:
    """Careers that follow a deterministic rule: the next state is the successor of the previous one."""
    rng = np.random.default_rng(0)
    codes = vocabulary().codes[STATES]
    rows = []
    for person in range(240):
        state, first_year = rng.integers(len(STATES)), rng.integers(1980, 1990)
        sex, birth_year = rng.choice(["male", "female"]), rng.integers(1950, 1965)
        for year in range(first_year, first_year + rng.integers(2, 6)):
            rows.append((f"p{person:03d}", year, codes[state], sex, birth_year))
            state = (state + 1) % len(STATES)
    path = tmp_path_factory.mktemp("planted") / "planted.csv"
    pd.DataFrame(rows, columns=["person_id", "year", "occupation", "sex", "birth_year"]).to_csv(
        path, index=False
    )
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    return {name: tmp_path_factory.mktemp(name) for name in ("corpus", "features")}


def make_data(planted_csv, dirs, **kwargs) -> TransitionData:
    source = PanelSource(
        kind="table", path=str(planted_csv), columns=ColumnMap(sex="sex", birth_year="birth_year")
    )
    kwargs = {"tokenizer": "tiny", "cache_dir": str(dirs["corpus"]), "transition_batch_size": 64, **kwargs}
    return TransitionData(sources=[source], **kwargs)


def make_model(dirs, **kwargs) -> OccupationHead:
    return OccupationHead(**{"base_model": "tiny", "feature_cache_dir": str(dirs["features"]), **kwargs})


def trainer(**kwargs) -> L.Trainer:
    options = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return L.Trainer(accelerator="cpu", **{**options, **kwargs})


def adam(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr)


def test_embedding_head_learns_a_planted_rule(planted_csv, dirs, tmp_path):
    data = make_data(planted_csv, dirs)
    model = make_model(
        dirs,
        head="embedding",
        hidden_size=128,
        optimizer=adam(1e-2),
        predictions_path=str(tmp_path / "p.parquet"),
    )
    run = trainer(max_epochs=80)
    run.fit(model, data)
    run.predict(model, data)
    pred = Predictions.read(tmp_path / "p.parquet")
    later = pred.table["prev_state"].to_numpy() >= 0  # first years are random: nothing to learn there
    nll = -pred.realized_log_prob()[later].mean()
    train = data.transitions("train")
    train = train[train["prev_state"] >= 0]
    # the marginal distribution of later states: the best predictor that ignores the text
    marginal = np.bincount(train["state"], minlength=V) / len(train)
    baseline = -np.log(marginal[pred.table["state"].to_numpy()[later]]).mean()
    assert baseline > np.log(len(STATES)) - 0.1
    assert nll < 0.5 and nll < baseline / 4


def test_two_stage_puts_the_stay_probability_on_the_previous_state():
    torch.manual_seed(0)
    which, stay = torch.randn(5, V), torch.randn(5)
    prev = torch.tensor([-1, 0, 7, V - 1, -1])
    log_probs = two_stage_log_probs(which, stay, prev)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(5))
    first, later = prev < 0, torch.nonzero(prev >= 0).squeeze(1)
    assert torch.allclose(log_probs[first], which[first].log_softmax(-1))
    assert torch.allclose(log_probs[later, prev[later]].exp(), torch.sigmoid(stay[later]))
    for i in later:  # the other states share 1 - sigmoid(stay) as a softmax that leaves out the previous one
        others = torch.ones(V, dtype=torch.bool)
        others[prev[i]] = False
        expected = which[i, others].softmax(-1) * torch.sigmoid(-stay[i])
        assert torch.allclose(log_probs[i, others].exp(), expected, atol=1e-7)


def test_two_stage_predictions_are_distributions_written_for_every_test_transition(
    planted_csv, dirs, tmp_path
):
    data = make_data(planted_csv, dirs)
    full, top = tmp_path / "full.parquet", tmp_path / "top.parquet"
    model = make_model(dirs, head="two_stage", optimizer=adam(1e-2), predictions_path=str(full))
    run = trainer(max_epochs=3)
    run.fit(model, data)
    run.predict(model, data)
    pred = Predictions.read(full)
    pred.check_normalized(atol=1e-5)
    test = data.transitions("test")
    assert pred.table[["person_id", "year", "state", "prev_state"]].equals(
        test[["person_id", "year", "state", "prev_state"]].reset_index(drop=True)
    )
    assert pred.table["sex"].notna().all() and pred.table["birth_year"].notna().all()
    assert pred.model == "llm_two_stage"
    with torch.no_grad():
        stay_logit = model.net(model.features("test"))[:, -1]
    later = np.flatnonzero(pred.table["prev_state"].to_numpy() >= 0)
    prev = pred.table["prev_state"].to_numpy()[later]
    np.testing.assert_allclose(
        np.exp(pred.log_probs[later, prev]), torch.sigmoid(stay_logit[later]), atol=1e-5
    )

    model.top_k, model.predictions_path = 3, str(top)
    run.predict(model, data)
    written = pq.read_table(top).to_pandas()
    assert len(written) == len(test) and "log_probs" not in written
    best = np.stack(written["top_states"].to_numpy())
    assert best.shape == (len(test), 3)
    np.testing.assert_array_equal(best[:, 0], pred.log_probs.argmax(1))


def test_likelihood_head_is_the_renormalized_scorer_and_fitting_the_temperature_lowers_nll(planted_csv, dirs):
    data = make_data(planted_csv, dirs, max_persons=30, fit_split="valid", transition_batch_size=None)
    model = make_model(dirs, head="likelihood")
    run = trainer(max_epochs=2, num_sanity_val_steps=0)
    before = run.validate(model, data, verbose=False)[0]["val/nll"]

    lm, table, token_ids = load_causal_lm("tiny"), data.transitions("valid"), data.token_ids("valid")
    scorer = ClosedSetScorer(lm, data.tokenizer, [" " + t for t in data.template.targets()])
    scores = torch.cat(
        [scorer.score_resume(token_ids[r], rows["tok_start"].tolist()) for r, rows in table.groupby("resume")]
    )
    with torch.no_grad():
        log_probs = model(model.features("valid"), torch.as_tensor(table["prev_state"].to_numpy(np.int64)))
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(len(table)), atol=1e-5)
    assert torch.allclose(log_probs, normalize(scores)[0], atol=1e-5)
    nll = -log_probs[torch.arange(len(table)), torch.as_tensor(table["state"].to_numpy(np.int64))].mean()
    assert float(nll) == pytest.approx(before, rel=1e-5)

    run.fit(model, data)
    after = run.validate(model, data, verbose=False)[0]["val/nll"]
    assert after < before - 0.01
    assert float(model.log_temperature) != 0.0


def test_temperature_fitting_recovers_the_temperature_of_the_data():
    model = OccupationHead(head="likelihood", base_model="tiny")
    generator = torch.Generator().manual_seed(0)
    scores = 3 * torch.randn(4000, V, generator=generator)
    states = torch.multinomial((scores / 2).softmax(-1), 1, generator=generator).squeeze(1)
    optimizer = model.configure_optimizers()

    def closure():
        optimizer.zero_grad()
        loss = F.nll_loss(model(scores, torch.full_like(states, -1)), states)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(model.log_temperature.exp()) == pytest.approx(2.0, rel=0.05)


def test_features_are_cached_on_disk_and_reused_without_loading_the_lm(planted_csv, dirs, tmp_path):
    data = make_data(planted_csv, dirs, max_persons=40)
    cache = tmp_path / "features"
    first = make_model(dirs, head="embedding", feature_cache_dir=str(cache))
    trainer().validate(first, data, verbose=False)
    files = sorted(cache.iterdir())
    assert [f.name.split("-")[:2] for f in files] == [["hidden", "valid"]] and "lm" in first._frozen

    again = make_model(dirs, head="embedding", feature_cache_dir=str(cache))
    trainer().validate(again, data, verbose=False)
    assert sorted(cache.iterdir()) == files and "lm" not in again._frozen
    assert torch.equal(again.features("valid"), first.features("valid"))

    other_layer = make_model(dirs, head="embedding", feature_cache_dir=str(cache), layer=1)
    trainer().validate(other_layer, data, verbose=False)
    assert len(list(cache.iterdir())) == 2
    assert not torch.equal(other_layer.features("valid"), first.features("valid"))


@pytest.fixture(scope="module")
def adapter(planted_csv, dirs, tmp_path_factory) -> Path:
    """A LoRA adapter from a few fine-tuning steps on the planted corpus (exported with its tokenizer)."""
    from lit_career.llm.corpus import ResumeCorpus
    from lit_career.llm.lm import CausalLMFineTuner

    folder = tmp_path_factory.mktemp("run") / "adapter"
    source = PanelSource(
        kind="table", path=str(planted_csv), columns=ColumnMap(sex="sex", birth_year="birth_year")
    )
    corpus = ResumeCorpus(sources=[source], tokenizer="tiny", cache_dir=str(dirs["corpus"]), max_persons=40)
    tuner = CausalLMFineTuner(base_model="tiny", mode="lora", export_dir=str(folder), optimizer=adam(1e-2))
    trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0).fit(tuner, corpus)
    return folder


def test_adapter_features_are_those_of_the_base_with_the_adapter(planted_csv, dirs, adapter):
    from peft import PeftModel

    data = make_data(planted_csv, dirs, max_persons=40)
    tuned = OccupationHead(head="embedding", adapter=str(adapter), feature_cache_dir=str(dirs["features"]))
    assert tuned.base_model == "tiny"  # read from the fine-tuning run's hparams
    trainer().validate(tuned, data, verbose=False)
    base = make_model(dirs, head="embedding")
    trainer().validate(base, data, verbose=False)

    table, token_ids = data.transitions("valid"), data.token_ids("valid")
    row = table.iloc[-1]
    lm = PeftModel.from_pretrained(load_causal_lm("tiny"), str(adapter)).eval()
    with torch.no_grad():
        hidden = lm(torch.tensor([token_ids[row.resume]]), output_hidden_states=True).hidden_states[-1][0]
    assert torch.allclose(tuned.features("valid")[-1], hidden[row.tok_start - 1], atol=1e-5)
    assert not torch.allclose(base.features("valid")[-1], hidden[row.tok_start - 1], atol=1e-5)


def test_data_that_splits_persons_differently_from_fine_tuning_is_flagged(
    planted_csv, dirs, adapter, tmp_path
):
    import dataclasses
    import shutil
    import warnings

    import yaml

    copy = shutil.copytree(adapter, tmp_path / "adapter")
    data = make_data(planted_csv, dirs, max_persons=40)
    sources = [dataclasses.asdict(source) for source in data.sources]
    saved = {"sources": sources, "template": None, "split_fractions": None, "split_seed": 0}
    for max_persons, flagged in ((40, False), (100, True)):
        config = {"data": {"class_path": "ResumeCorpus", "init_args": {**saved, "max_persons": max_persons}}}
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
        model = make_model(dirs, head="embedding", adapter=str(copy))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer().validate(model, data, verbose=False)
        assert any("['max_persons']" in str(w.message) for w in caught) == flagged


def test_data_tokenized_with_another_tokenizer_is_an_input_error(planted_csv, dirs, tmp_path):
    other = train_tiny_tokenizer(["1980: Cashiers\n", "Resume from the survey.\n"], vocab_size=300)
    other.save_pretrained(tmp_path / "tokenizer")
    data = make_data(planted_csv, dirs, max_persons=20, tokenizer=str(tmp_path / "tokenizer"))
    with pytest.raises(InputError, match="tokenizer"):
        trainer().validate(make_model(dirs, head="embedding"), data)


@pytest.mark.parametrize("name", ["embedding", "two_stage", "likelihood"])
def test_configs_instantiate(name):
    from lit_career.runs.lightning_cli import LitCareerCLI

    cli = LitCareerCLI(["--config", str(REPO / "configs" / "fit" / "head" / f"{name}.yaml")], run=False)
    assert isinstance(cli.model, OccupationHead) and cli.model.head == name
    assert (
        isinstance(cli.datamodule, TransitionData) and cli.datamodule.tokenizer_source == cli.model.base_model
    )


def test_cli_fits_then_predicts_with_a_fine_tuned_adapter(adapter, tmp_path):
    from lit_career.cli import main

    config = ["--config", str(REPO / "configs" / "fit" / "head" / "embedding.yaml")]
    overrides = [
        f"--trainer.default_root_dir={tmp_path}",
        "--run_name=run",
        "--trainer.logger=false",
        "--trainer.max_epochs=2",
        "--data.init_args.max_persons=40",
        "--data.init_args.max_length=512",
        f"--model.init_args.adapter={adapter}",
    ]
    main(["fit", *config, *overrides])
    checkpoint = tmp_path / "run/checkpoints/best.ckpt"
    assert checkpoint.is_file()
    main(["predict", *config, *overrides, f"--ckpt_path={checkpoint}"])
    pred = Predictions.read(tmp_path / "run/predictions_test.parquet")  # the run folder
    pred.check_normalized()
    assert len(pred.table) > 0 and set(pred.table["split"]) == {"test"}
