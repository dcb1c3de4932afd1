"""Engagement scores: hand-checked timelines, and the analysis agreeing with
live profiles on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from footfall.analytics import engagement
from footfall.analytics.conditions import Filter
from footfall.analytics.engagement import EngagementSpec
from footfall.analytics.errors import SpecError
from footfall.config import EngagementSettings, ProjectConfig
from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .timeline import T0, identify, track

PASSIVE = {"signal": "passive"}


def person_of(database: Database, kind: str, value: str) -> str:
    """The person an identity belongs to now (ClickHouse may still hold its earlier row)."""
    [person] = [person for k, v, person in database.identity_rows() if (k, v) == (kind, value)]
    return person


def test_scores_weigh_events_signals_and_age(database: Database) -> None:
    Pipeline(database).ingest_events([
        # a: two passive views (0.5 each), a cart add (3), a purchase (5) = 9
        track("page_view", "-2h", anon="a", properties=PASSIVE),
        track("page_view", "-90m", anon="a", properties=PASSIVE),
        track("add_to_cart", "-80m", anon="a"),
        track("purchase", "-70m", anon="a"),
        # b: a click (1); an unweighted search (0); a purchase 31 days ago, outside the window
        track("click", "-1d", anon="b"),
        track("search", "-1d", anon="b"),
        track("purchase", "-31d", anon="b"),
        # c: only unweighted events: scored 0
        track("search", "-3h", anon="c"),
        # d: a purchase exactly at the window's first hour (30 days before 12:00) counts
        track("purchase", "-30d", anon="d"),
        # e: nothing in the window: not scored
        track("purchase", "-40d", anon="e"),
    ])
    result = engagement.run(database, EngagementSpec(as_of=T0))
    by_person = {entry.person_id: entry for entry in result.top}
    expected = {"a": 9.0, "b": 1.0, "c": 0.0, "d": 5.0}
    assert {anon: by_person[person_of(database, "anonymous", anon)].score for anon in expected} == expected
    assert result.persons == 4
    assert by_person[person_of(database, "anonymous", "b")].events == 2
    # Interpolated quantiles of [0, 1, 5, 9]: at 0.4, position 1.2 → 1 + 0.2 * (5 - 1) = 1.8; at 0.8, position 2.4 → 6.6
    assert (result.low_cut, result.high_cut) == pytest.approx((1.8, 6.6))
    assert {by_person[person_of(database, "anonymous", anon)].band for anon in ("b", "c")} == {"low"}
    assert by_person[person_of(database, "anonymous", "d")].band == "medium"
    assert by_person[person_of(database, "anonymous", "a")].band == "high"
    assert result.bands == {"high": 1, "medium": 1, "low": 2}
    assert [entry.score for entry in result.top] == [9.0, 5.0, 1.0, 0.0]


def test_decay_and_settings_from_the_project_or_the_spec(database: Database) -> None:
    database.config = ProjectConfig(engagement=EngagementSettings(window="7d", recency_half_life="1d", weights={"purchase": 8.0}))
    Pipeline(database).ingest_events([
        track("purchase", "-2d", anon="x"),  # 48 h old: a quarter
        track("purchase", "-10m", anon="x"),  # 11:50 is in the hour before 12:00: an hour old
        track("purchase", "-8d", anon="x"),  # outside the 7-day window
    ])
    [entry] = engagement.run(database, EngagementSpec(as_of=T0)).top
    assert entry.score == pytest.approx(8 * 0.25 + 8 * 0.5 ** (1 / 24))
    no_decay = EngagementSpec(as_of=T0, half_life=None, window=timedelta(days=30), weights={"purchase": 1.0})
    assert engagement.run(database, no_decay).top[0].score == 3.0


def test_filters_keep_events_and_persons(database: Database) -> None:
    Pipeline(database).ingest_events([
        identify("-5h", anon="p", user="pro-user", traits={"plan": "pro"}),
        track("purchase", "-4h", user="pro-user", properties={"channel": "web"}),
        track("purchase", "-3h", user="pro-user", properties={"channel": "app"}),
        identify("-5h", anon="q", user="free-user", traits={"plan": "free"}),
        track("purchase", "-4h", user="free-user", properties={"channel": "web"}),
    ])
    spec = EngagementSpec(as_of=T0, filters=(Filter("traits.plan", "eq", "pro"), Filter("properties.channel", "eq", "web")))
    result = engagement.run(database, spec)
    assert [(entry.person_id, entry.score) for entry in result.top] == [(person_of(database, "user", "pro-user"), 5.0)]


def test_an_empty_window_scores_nobody(database: Database) -> None:
    result = engagement.run(database, EngagementSpec(as_of=T0))
    assert (result.persons, result.top, result.bands) == (0, (), {"high": 0, "medium": 0, "low": 0})


def test_scores_equal_what_live_profiles_show(database: Database) -> None:
    database.config = ProjectConfig(engagement=EngagementSettings(window="7d", recency_half_life="3d"))
    profiles = LiveProfiles(database)
    pipeline = Pipeline(database, profiles=profiles)
    for table in Simulation(SimulationSpec(users=80, days=14, seed=21)).batches(max_rows=900):
        pipeline.ingest(table)
    latest = database.query("SELECT max(timestamp) FROM events").rows[0][0]
    for as_of in (latest, latest - timedelta(days=4, minutes=41)):
        scored = engagement.scores(database, EngagementSpec(as_of=as_of))
        views = profiles.views(as_of)
        assert len(scored) > 20
        for person, (score, _) in scored.items():
            assert views[person].engagement_score == pytest.approx(score, abs=1e-6), person
        # Persons without events in the window score 0 in their profiles.
        assert all(view.engagement_score == 0 for person, view in views.items() if person not in scored)


@given(st.lists(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**40), 2**40).map(lambda n: n / 512)  # sums of weights such as 1, 3 and 0.5
    | st.sampled_from([0.0, -0.0, 2**53 / 10**9, 0.1 + 0.2, 1 / 3]),
    max_size=40,
))
def test_scores_are_rounded_as_python_rounds_them(scores: list[float]) -> None:
    # (bands compare scores rounded to 9 decimals; most skip round() itself)
    rounded = engagement._sorted_rounded(scores)
    expected = sorted(round(score, 9) for score in scores)
    assert rounded == expected
    assert [str(value) for value in rounded] == [str(value) for value in expected]  # -0.0 too


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"window": timedelta(minutes=90)}, "window"),
        ({"weights": {"purchase": "five"}}, "weights"),
        ({"passive_weight": 2}, "passive_weight"),
        ({"half_life": timedelta(0)}, "half_life"),
        ({"bands": (0.8, 0.4)}, "bands"),
        ({"limit": -1}, "limit"),
        ({"as_of": T0.replace(tzinfo=None)}, "as_of"),
    ],
)
def test_bad_specs_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as error:
        EngagementSpec(**options)  # type: ignore[arg-type]
    assert error.value.field == field
