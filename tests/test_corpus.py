import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from lit_career.llm.backbone import train_tiny_tokenizer
from lit_career.llm.batching import (
    BucketBatchSampler,
    BucketSampler,
    PadCollator,
    ResumableLoader,
    ResumeDataset,
    padding_fraction,
)
from lit_career.llm.corpus import ResumeCorpus
from lit_career.panel import nlsy79
from lit_career.panel.table import ColumnMap
from lit_career.panel.taxonomy import vocabulary
from lit_career.sources import PanelSource
from lit_career.text import tokenize as corpus_module
from lit_career.text.resume import ResumeTemplate, parse, render_panel

PERSONS = 200


@pytest.fixture(scope="module", autouse=True)
def nlsy79_loaded_once():
    """Load the bundled NLSY79 once for the module (each corpus gets its own shallow copy)."""
    panel = nlsy79.load_nlsy79()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nlsy79, "load_nlsy79", lambda path=None, **_: dataclasses.replace(panel))
        yield panel


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, nlsy79_loaded_once):
    panel = nlsy79_loaded_once
    texts, _ = render_panel(panel.subset(panel.persons.index[:300]))
    folder = tmp_path_factory.mktemp("tokenizer")
    train_tiny_tokenizer(texts["text"].tolist(), vocab_size=400).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus_cache"))


def make(tokenizer_dir, cache, **kwargs) -> ResumeCorpus:
    kwargs = {"max_persons": PERSONS, "tokenizer": tokenizer_dir, "cache_dir": cache, **kwargs}
    corpus = ResumeCorpus(**kwargs)
    corpus.prepare_data()
    corpus.setup("fit")
    return corpus


@pytest.fixture(scope="module")
def titles_corpus(tokenizer_dir, cache):
    return make(tokenizer_dir, cache, loss_on="targets")


@pytest.fixture(scope="module")
def codes_corpus(tokenizer_dir, cache):
    return make(tokenizer_dir, cache, template=ResumeTemplate(labels="codes"))


def batches_with_indices(loader):
    """Each batch of ``loader`` with the dataset indices of its rows."""
    return list(zip(loader.batch_sampler, loader, strict=True))


@pytest.mark.parametrize("labels", ["titles", "codes"])
def test_target_token_spans_decode_to_the_space_and_the_target(labels, request):
    corpus = request.getfixturevalue(f"{labels}_corpus")
    tokenizer = corpus.tokenizer
    targets = ResumeTemplate(labels=labels).targets()
    alone = tokenizer([" " + t for t in targets], add_special_tokens=False)["input_ids"]
    for split in ("train", "valid", "test"):
        ids, texts = corpus.token_ids(split), corpus.texts(split)
        for row in corpus.transitions(split).itertuples():
            text, tokens = texts[row.resume], ids[row.resume]
            target = text[row.prompt_end : row.target_end]
            assert target == targets[row.state]
            assert tokens[0] == tokenizer.bos_token_id
            # whether or not the space merges into the label's first token, the span starts with it ...
            assert tokenizer.decode(tokens[row.tok_start : row.tok_end]) == " " + target
            assert tokenizer.decode(tokens[1 : row.tok_start]) == text[: row.prompt_end - 1]
            # ... and is tokenized as the candidate alone is, so closed-set scores are the resume's
            assert tokens[row.tok_start : row.tok_end] == alone[row.state]
        assert [tokenizer.decode(tokens[1:]) for tokens in ids] == texts


def test_titles_only_labels_cover_exactly_the_title_tokens(titles_corpus):
    transitions = titles_corpus.transitions("train")
    spans = transitions.groupby("resume")[["tok_start", "tok_end"]].apply(lambda t: t.to_numpy())
    ids = titles_corpus.token_ids("train")
    for indices, batch in batches_with_indices(titles_corpus.train_dataloader())[:5]:
        for row, resume in enumerate(indices):
            expected = torch.zeros(batch["labels"].shape[1], dtype=torch.bool)
            for start, end in spans[resume]:
                expected[start:end] = True
            labelled = batch["labels"][row] != -100
            assert torch.equal(labelled, expected)
            assert (
                batch["labels"][row][labelled].tolist()
                == np.array(ids[resume])[expected[: len(ids[resume])]].tolist()
            )
            assert batch["attention_mask"][row].sum() == len(ids[resume])


def test_all_token_labels_mask_only_padding(tokenizer_dir, cache, titles_corpus):
    corpus = make(tokenizer_dir, cache, loss_on="all")
    pad = corpus.tokenizer.pad_token_id
    for indices, batch in batches_with_indices(corpus.val_dataloader()):
        mask = batch["attention_mask"].bool()
        assert torch.equal(batch["labels"][mask], batch["input_ids"][mask])
        assert (batch["labels"][~mask] == -100).all() and (batch["input_ids"][~mask] == pad).all()
        assert (mask.cumsum(1) == mask.sum(1, keepdim=True)).logical_or(mask).all()  # right padding
        lengths = [len(corpus.token_ids("valid")[i]) for i in indices]
        assert mask.sum(1).tolist() == lengths


def test_splits_partition_persons(titles_corpus, nlsy79_loaded_once):
    persons = {split: set(titles_corpus.resumes(split)["person_id"]) for split in ("train", "valid", "test")}
    assert sum(map(len, persons.values())) == len(set().union(*persons.values())) == PERSONS
    assert set().union(*persons.values()) <= set(nlsy79_loaded_once.persons.index)
    for split, ids in persons.items():
        assert set(titles_corpus.transitions(split)["person_id"]) == ids
        assert set(titles_corpus.panels(split)["NLSY79"].persons.index) == ids
    assert 0.7 < len(persons["train"]) / PERSONS < 0.9


def test_padding_fraction_is_under_five_percent_and_reported(titles_corpus):
    loader = titles_corpus.train_dataloader()
    pad = total = 0
    for batch in loader:
        pad += int((batch["attention_mask"] == 0).sum())
        total += batch["attention_mask"].numel()
    assert pad / total == pytest.approx(titles_corpus.stats["padding_fraction"]["train"])
    assert pad / total < 0.05
    # without bucketing the same batches would pad far more: the figure measures something
    lengths = titles_corpus.resumes("train")["n_tokens"].to_numpy()
    order = np.random.default_rng(0).permutation(len(lengths))
    assert padding_fraction(lengths, np.array_split(order, len(order) // 8)) > 0.15


def test_batches_are_deterministic_in_seed_and_epoch(tokenizer_dir, cache, titles_corpus):
    def epoch_batches(corpus, epoch):
        loader = corpus.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        return [batch["input_ids"] for batch in loader]

    same = make(tokenizer_dir, cache, loss_on="targets")
    other = make(tokenizer_dir, cache, loss_on="targets", seed=1)
    first = epoch_batches(titles_corpus, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(same, 0), strict=True))
    for different in (epoch_batches(titles_corpus, 1), epoch_batches(other, 0)):
        assert len(different) == len(first)
        assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first, different, strict=True))


def test_bucket_sampler_covers_each_resume_once_per_epoch_in_short_buckets():
    lengths = np.random.default_rng(0).integers(20, 400, size=5000)
    sampler = BucketSampler(lengths, 8, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        assert sorted(np.concatenate(batches)) == list(range(5000)) == sorted(sampler)
        assert len(sampler) == 5000 and all(len(b) == 8 for b in batches)
        assert padding_fraction(lengths, batches) < 0.05
    ordered = BucketSampler(lengths, 8, shuffle=False)
    assert list(ordered) == list(np.argsort(lengths, kind="stable"))


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_share_the_epoch_buckets_disjoint_and_equal_in_number(shuffle):
    lengths = np.random.default_rng(0).integers(20, 400, size=1003)  # 126 batches of 8, the last short
    sampler = BucketSampler(lengths, 8, seed=3, shuffle=shuffle)
    everything = [b.tolist() for b in sampler.batches()]
    shares = [BucketBatchSampler(sampler, rank, 4, drop_last=shuffle) for rank in range(4)]
    batches = [list(share) for share in shares]
    assert [len(b) for b in batches] == [len(s) for s in shares] == [31 if shuffle else 32] * 4
    dealt = [batch for step in zip(*batches, strict=True) for batch in step]  # step by step, rank by rank
    if shuffle:  # training: 2 batches left out, the short one first
        assert dealt == everything[:124] and len(everything[-1]) == 3
    else:  # evaluation: every batch, the first 2 dealt again
        assert dealt == everything + everything[:2]


class CountingDataset(ResumeDataset):
    def __init__(self, token_ids):
        super().__init__(token_ids)
        self.loaded = Counter()

    def __getitem__(self, i):
        self.loaded[i] += 1
        return super().__getitem__(i)


def resumable(lengths, seed: int, rank: int = 0, world_size: int = 1) -> ResumableLoader:
    dataset = CountingDataset([np.arange(n) for n in lengths])
    return ResumableLoader(
        dataset, BucketBatchSampler(BucketSampler(lengths, 4, seed=seed), rank, world_size), PadCollator(0)
    )


def test_loader_state_resumes_the_epoch_at_the_next_batch_without_loading_the_skipped_ones(caplog):
    lengths = np.random.default_rng(1).integers(5, 60, size=80)  # 20 batches of 4
    uninterrupted = resumable(lengths, seed=7)
    uninterrupted.batch_sampler.sampler.set_epoch(2)
    expected = [batch["input_ids"] for batch in uninterrupted]
    interrupted = resumable(lengths, seed=7)
    interrupted.batch_sampler.sampler.set_epoch(2)
    for _, _ in zip(range(6), interrupted, strict=False):
        pass
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "seed": 7, "batches": 6}

    resumed = resumable(lengths, seed=0)  # epoch 0 and another seed: the checkpoint's win
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    got = [batch["input_ids"] for batch in resumed]
    assert len(got) == 14 and all(torch.equal(a, b) for a, b in zip(got, expected[6:], strict=True))
    skipped = np.concatenate(interrupted.batch_sampler.batches()[:6])
    assert not set(skipped) & set(resumed.loader.dataset.loaded)
    assert resumed.state_dict() == {"epoch": 2, "seed": 7, "batches": 20}
    resumed.batch_sampler.sampler.set_epoch(3)  # the next pass is a whole epoch
    assert len(list(resumed)) == 20

    # two ranks resuming what one process saved: the nearest batch before, with a warning
    ranks = [resumable(lengths, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for rank in ranks:
        rank.load_state_dict({"epoch": 2, "seed": 7, "batches": 7})
    assert "1 batch(es) run again" in caplog.text
    steps = [batch for step in zip(*ranks, strict=True) for batch in step]
    assert all(torch.equal(a, b) for a, b in zip([s["input_ids"] for s in steps], expected[6:], strict=True))


def test_cache_is_reused_and_keyed_by_what_changes_tokens(tokenizer_dir, tmp_path, monkeypatch):
    calls = []
    tokenize = corpus_module.tokenize_texts
    monkeypatch.setattr(
        corpus_module, "tokenize_texts", lambda tok, texts: calls.append(len(texts)) or tokenize(tok, texts)
    )
    first = make(tokenizer_dir, str(tmp_path), max_persons=50)
    assert calls and sum(calls) >= 50
    calls.clear()
    again = make(tokenizer_dir, str(tmp_path), max_persons=50, loss_on="targets", split_seed=1, batch_size=4)
    assert calls == []
    assert again.stats["tokens"] == first.stats["tokens"]
    assert set(again.resumes("train")["person_id"]) != set(first.resumes("train")["person_id"])
    for changed in ({"max_length": 100}, {"template": ResumeTemplate(labels="codes")}, {"max_persons": 40}):
        make(tokenizer_dir, str(tmp_path), **{"max_persons": 50, **changed})
        assert calls, f"{changed} reused a stale cache"
        calls.clear()
    assert len(list(tmp_path.iterdir())) == 4


def test_truncation_keeps_the_latest_years_and_counts_what_it_drops(tokenizer_dir, cache, nlsy79_loaded_once):
    full = make(tokenizer_dir, cache, max_persons=60)
    short = make(tokenizer_dir, cache, max_persons=60, max_length=100)
    assert full.stats["truncated_resumes"] == 0 and full.stats["max_tokens"] > 100
    full_texts = pd.concat([full.resumes(s) for s in ("train", "valid", "test")]).set_index("person_id")[
        "text"
    ]
    truncated = dropped = 0
    for split in ("train", "valid", "test"):
        kept_years = short.transitions(split).groupby("person_id")["year"].apply(list)
        for resume in short.resumes(split).itertuples():
            years = parse(full_texts[resume.person_id])["years"]
            assert resume.n_tokens <= 100
            assert (
                parse(resume.text)["years"] == kept_years[resume.person_id] == years[resume.dropped_years :]
            )
            if resume.dropped_years:
                truncated, dropped = truncated + 1, dropped + resume.dropped_years
                # header and person sentence survive; one more year would not fit
                assert resume.text.split("\n")[:2] == full_texts[resume.person_id].split("\n")[:2]
                panel = nlsy79_loaded_once.subset([resume.person_id])
                one_more = dataclasses.replace(panel, records=panel.records.iloc[resume.dropped_years - 1 :])
                text = render_panel(one_more)[0]["text"].iat[0]
                assert 1 + len(short.tokenizer(text, add_special_tokens=False).input_ids) > 100
    assert truncated > 0
    assert short.stats["truncated_resumes"] == truncated and short.stats["dropped_years"] == dropped
    count = {c: sum(len(c.transitions(s)) for s in ("train", "valid", "test")) for c in (full, short)}
    assert count[short] + dropped == count[full]


def test_too_small_max_length_is_an_error(tokenizer_dir, cache):
    with pytest.raises(ValueError, match="max_length=10"):
        make(tokenizer_dir, cache, max_persons=20, max_length=10)


def write_small_table(path, persons: int) -> None:
    vocab = vocabulary()
    codes = vocab.codes[~vocab.table["is_special"].to_numpy()]
    rng = np.random.default_rng(0)
    rows = [
        {"pid": f"w{p}", "yr": 2000 + t, "occ": int(rng.choice(codes))}
        for p in range(persons)
        for t in range(int(rng.integers(2, 6)))
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_mixture_draws_sources_in_proportion_to_weights(tokenizer_dir, cache, tmp_path):
    table = tmp_path / "small.csv"
    write_small_table(table, 40)
    sources = [
        PanelSource(weight=1.0),
        PanelSource(
            kind="table", path=str(table), columns=ColumnMap("pid", "yr", "occ"), name="PSID", weight=3.0
        ),
    ]
    corpus = make(tokenizer_dir, cache, sources=sources)
    train = corpus.resumes("train")
    n = train["source"].value_counts()
    total = len(train)
    expected = {"NLSY79": round(total / 4), "PSID": round(3 * total / 4)}
    assert expected["PSID"] > 2 * n["PSID"]  # the small source must repeat
    sampler = corpus.train_dataloader().batch_sampler.sampler
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        drawn = Counter(sampler)
        by_source = Counter(train["source"].iloc[list(drawn.elements())])
        assert dict(by_source) == expected
        psid = [drawn[i] for i in np.flatnonzero(train["source"] == "PSID")]
        assert max(psid) - min(psid) <= 1  # as even as possible: whole passes plus a partial one
        nlsy = [drawn[i] for i in np.flatnonzero(train["source"] == "NLSY79")]
        assert set(nlsy) <= {0, 1} and sum(nlsy) == expected["NLSY79"]
    seen = Counter(
        train["source"].iloc[[i for batch in corpus.train_dataloader().batch_sampler for i in batch]]
    )
    assert dict(seen) == expected
    # validation and test keep each source's own split, unweighted
    for split, loader in (("valid", corpus.val_dataloader()), ("test", corpus.test_dataloader())):
        assert set(corpus.resumes(split)["source"]) == {"NLSY79", "PSID"}
        assert sorted(loader.batch_sampler.sampler) == list(range(len(corpus.resumes(split))))
    assert corpus.stats["sources"]["PSID"]["persons"] == 40
    assert {name: source["train_epoch_draws"] for name, source in corpus.stats["sources"].items()} == expected
    assert set(corpus.transitions("train")["source"]) == {"NLSY79", "PSID"}


def test_sources_need_distinct_names(tokenizer_dir, cache):
    with pytest.raises(ValueError, match="distinct names"):
        make(tokenizer_dir, cache, sources=[PanelSource(), PanelSource(weight=2.0)])
