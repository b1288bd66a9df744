import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_career.panel.careers import EDUCATION_LEVELS, assign_splits
from lit_career.panel.nlsy79 import load_nlsy79
from lit_career.panel.taxonomy import vocabulary
from lit_career.text.resume import ResumeTemplate, parse, render, render_panel

V = len(vocabulary())
word = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu")), min_size=1, max_size=8)


@st.composite
def careers(draw):
    n = draw(st.integers(1, 12))
    start = draw(st.integers(1950, 2010))
    years = np.cumsum([start] + draw(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1)))
    states = draw(st.lists(st.integers(0, V - 1), min_size=n, max_size=n))
    education = draw(st.lists(st.sampled_from([None, *EDUCATION_LEVELS]), min_size=n, max_size=n))
    return {
        "years": years.tolist(),
        "states": states,
        "education": education,
        "sex": draw(st.one_of(st.none(), word)),
        "race": draw(st.one_of(st.none(), st.builds(lambda a, b: f"{a} {b}", word, word))),
        "birth_year": draw(st.one_of(st.none(), st.integers(1900, 2000))),
    }


@settings(max_examples=200, deadline=None)
@given(careers(), st.sampled_from(["titles", "codes"]))
def test_render_parse_round_trip(career, labels):
    template = ResumeTemplate(labels=labels)
    resume = render(
        template,
        "NLSY79",
        career["years"],
        career["states"],
        career["education"],
        sex=career["sex"],
        race=career["race"],
        birth_year=career["birth_year"],
    )
    back = parse(resume.text, template)
    assert back["years"] == career["years"] and back["states"] == career["states"]
    assert (back["sex"], back["race"], back["birth_year"]) == (
        career["sex"],
        career["race"],
        career["birth_year"],
    )
    # education is shown when it changes: the parsed level is the last one shown
    shown, expected = None, []
    for level in career["education"]:
        shown = level if level is not None else shown
        expected.append(shown)
    assert back["education"] == expected
    targets = template.targets()
    for i, state in enumerate(career["states"]):
        assert resume.text[resume.prompt_end[i] : resume.target_end[i]] == targets[state]
        assert resume.text[: resume.prompt_end[i]].endswith(f"\n{career['years'][i]}: ")


def test_template_variants_hide_covariates():
    base = dict(sex="female", race="black", birth_year=1960)
    text = render(ResumeTemplate(demographics=False, birth_year=False), "X", [2000], [0], **base).text
    assert "female" not in text and "1960" not in text
    text = render(ResumeTemplate(demographics=False), "X", [2000], [0], **base).text
    assert "A worker, born in 1960.\n" in text and "female" not in text
    text = render(ResumeTemplate(labels="codes"), "X", [2000], [0], **base).text
    assert "2000: 4\n" in text


def test_render_panel_transitions_match_records():
    panel = assign_splits(load_nlsy79())
    panel = panel.subset(panel.persons.index[:300])
    texts, transitions = render_panel(panel)
    assert len(transitions) == len(panel.records) and len(texts) == len(panel.persons)
    titles = ResumeTemplate().targets()
    for row in transitions.sample(200, random_state=0).itertuples():
        text = texts["text"].iat[row.resume]
        assert texts["person_id"].iat[row.resume] == row.person_id
        assert text[row.prompt_end : row.target_end] == titles[row.state]
    first = transitions.groupby("person_id").head(1)
    assert (first["prev_state"] == -1).all() and (first["gap"] == 0).all()
    rest = transitions.drop(first.index)
    assert (rest["gap"] > 0).all()
    assert pd.Series(rest["prev_state"] >= 0).all()
