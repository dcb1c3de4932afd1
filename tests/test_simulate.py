"""The simulator: output contract, determinism, realism, and ground truth agreeing with the events."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from footfall.events.enrich import describe_client
from footfall.events.record import EVENT_SCHEMA
from footfall.simulate import (
    EVENT_NAMES,
    PERSONAS,
    GroundTruth,
    Simulation,
    SimulationSpec,
    simulate,
)
from footfall.simulate.tables import PROPERTY_BUILDERS
from footfall.simulate.world import COUNTRIES_TABLE

SPEC = SimulationSpec(users=1500, days=28, seed=11, project_id="shop")
SMALL = SimulationSpec(users=150, days=10, seed=5)
BATCH_ROWS = 40_000
SESSION_GAP = pd.Timedelta(minutes=30)
PASSIVE = {"page_view", "scroll", "page_leave", "hover", "view_product"}
ACTIVE = {"click", "search", "add_to_cart", "checkout_started", "purchase", "sign_up"}


@dataclass(frozen=True)
class Run:
    """One simulation, its batches, its events as a frame, and its ground truth.

    ``frame.user`` is the ground-truth row of each event's user, found through
    the anonymous id of either device.
    """

    simulation: Simulation
    batches: list[pa.Table]
    events: pa.Table
    frame: pd.DataFrame
    truth: GroundTruth
    users: pd.DataFrame


@pytest.fixture(scope="module")
def run() -> Run:
    simulation = Simulation(SPEC)
    batches = list(simulation.batches(max_rows=BATCH_ROWS))
    events = pa.concat_tables(batches)
    truth = simulation.ground_truth()
    users = truth.users.to_pandas()
    frame = events.to_pandas()
    frame["props"] = frame["properties"].map(json.loads)
    device_owner = pd.concat(
        [
            pd.Series(users.index, index=users["anonymous_id"]),
            pd.Series(users.index, index=users["second_anonymous_id"]).loc[
                lambda s: s.index.notna()
            ],
        ]
    )
    frame["user"] = frame["anonymous_id"].map(device_owner)
    frame = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    return Run(simulation, batches, events, frame, truth, users)


def first_per(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Each key's first row (``groupby().first()`` would skip nulls column by column)."""
    return frame.drop_duplicates(key).set_index(key)


def of_event(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["event"] == name]


# --- Spec and API ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"users": 0}, "users"),
        ({"days": 0}, "days"),
        ({"seed": -1}, "seed"),
        ({"start": datetime(2026, 1, 1)}, "start"),
        ({"project_id": ""}, "project_id"),
    ],
)
def test_spec_rejects_bad_values_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimulationSpec(**changes)


def test_batches_reject_a_non_positive_size() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        next(Simulation(SMALL).batches(max_rows=0))


def test_batches_have_the_event_schema_and_at_most_max_rows(run: Run) -> None:
    assert all(batch.schema.equals(EVENT_SCHEMA) for batch in run.batches)
    sizes = [batch.num_rows for batch in run.batches]
    assert len(sizes) > 1
    assert all(size == BATCH_ROWS for size in sizes[:-1])
    assert 0 < sizes[-1] <= BATCH_ROWS


def test_same_seed_gives_identical_events_and_truth() -> None:
    first, second = Simulation(SMALL), Simulation(SMALL)
    assert pa.concat_tables(first.batches()).equals(pa.concat_tables(second.batches()))
    assert first.ground_truth().users.equals(second.ground_truth().users)
    assert first.ground_truth().next_actions.equals(second.ground_truth().next_actions)


def test_another_seed_gives_other_events() -> None:
    other = SimulationSpec(users=SMALL.users, days=SMALL.days, seed=SMALL.seed + 1)
    assert not pa.concat_tables(simulate(SMALL)).equals(pa.concat_tables(simulate(other)))


def test_batch_size_does_not_change_the_events() -> None:
    whole = pa.concat_tables(Simulation(SMALL).batches())
    chunked = list(Simulation(SMALL).batches(max_rows=997))
    assert all(batch.num_rows <= 997 for batch in chunked)
    assert pa.concat_tables(chunked).equals(whole)


def test_ground_truth_is_the_same_whether_or_not_batches_were_read() -> None:
    eager = Simulation(SMALL).ground_truth()
    consumed = Simulation(SMALL)
    for _ in consumed.batches():
        pass
    assert eager.users.equals(consumed.ground_truth().users)
    assert eager.next_actions.equals(consumed.ground_truth().next_actions)


def test_ground_truth_writes_parquet(tmp_path: Path) -> None:
    truth = Simulation(SMALL).ground_truth()
    paths = truth.write(tmp_path / "truth")
    assert [path.name for path in paths] == ["users.parquet", "next_actions.parquet"]
    assert pq.read_table(paths[0]).equals(truth.users)
    assert pq.read_table(paths[1]).equals(truth.next_actions)


def test_catalogue_lists_products_with_complements() -> None:
    catalogue = Simulation(SMALL).catalogue().to_pandas()
    assert len(catalogue) == 200
    assert catalogue["category"].nunique() == 8
    assert (catalogue["price"] > 0).all()
    assert catalogue["complements"].map(len).eq(3).all()
    assert all(
        product not in complements
        for product, complements in zip(
            catalogue["product_id"], catalogue["complements"], strict=True
        )
    )


# --- Event contract -------------------------------------------------------------


def test_every_event_kind_has_a_property_builder() -> None:
    assert sorted(PROPERTY_BUILDERS) == list(range(len(EVENT_NAMES)))


def test_event_names_types_and_ids(run: Run) -> None:
    frame = run.frame
    assert set(frame["event"]) == set(EVENT_NAMES)
    expected_type = (
        frame["event"].map({"page_view": "page", "identify": "identify"}).fillna("track")
    )
    assert (frame["type"] == expected_type).all()
    assert frame["event_id"].is_unique
    assert frame["event_id"].str.startswith(f"sim-{SPEC.seed}-").all()
    assert (frame["project_id"] == SPEC.project_id).all()
    assert (frame["person_id"] == "").all()
    assert (frame["session_id"] == "").all()
    assert frame["anonymous_id"].notna().all()
    delay = frame["received_at"] - frame["timestamp"]
    assert (delay > pd.Timedelta(0)).all()
    assert (delay < pd.Timedelta(seconds=1)).all()


def test_events_lie_within_the_period(run: Run) -> None:
    start = pd.Timestamp(SPEC.start)
    assert run.frame["timestamp"].min() >= start
    assert run.frame["timestamp"].max() < start + pd.Timedelta(days=SPEC.days)


def test_every_behavioural_event_says_whether_it_is_passive_or_active(run: Run) -> None:
    behaviour = run.frame[run.frame["event"] != "identify"]
    signal = behaviour["props"].map(lambda props: props["signal"])
    assert (signal[behaviour["event"].isin(PASSIVE)] == "passive").all()
    assert (signal[behaviour["event"].isin(ACTIVE)] == "active").all()
    traits = of_event(run.frame, "identify")["props"]
    assert traits.map(lambda t: set(t) == {"email", "plan", "signup_channel"}).all()


def test_product_events_carry_the_product(run: Run) -> None:
    catalogue = run.simulation.catalogue().to_pandas().set_index("product_id")
    for name in ("view_product", "add_to_cart"):
        rows = of_event(run.frame, name)
        props = pd.DataFrame(list(rows["props"]), index=rows.index)
        assert (
            props["category"] == catalogue.loc[props["product_id"], "category"].to_numpy()
        ).all()
        assert np.allclose(props["price"], catalogue.loc[props["product_id"], "price"].to_numpy())
    viewed = of_event(run.frame, "view_product")
    assert (viewed["path"] == "/product/" + viewed["props"].map(lambda p: p["product_id"])).all()


def test_purchases_carry_order_revenue_and_products(run: Run) -> None:
    purchases = of_event(run.frame, "purchase")["props"]
    assert len(purchases) > 20
    assert purchases.map(lambda p: isinstance(p["revenue"], float) and p["revenue"] > 0).all()
    assert purchases.map(lambda p: len(p["product_ids"]) >= 1).all()
    assert purchases.map(lambda p: p["order_id"]).is_unique


def test_lifted_page_and_device_columns(run: Run) -> None:
    frame = run.frame
    assert frame["url"].str.startswith("https://shop.example/").all()
    assert (
        frame["url"]
        == "https://shop.example"
        + frame["path"]
        + frame["url"].str.extract(r"(\?.*)$")[0].fillna("")
    ).all()
    path_forms = r"^(/|/product/\d+|/category/[a-z]+|/search|/cart|/checkout)$"
    assert frame["path"].str.match(path_forms).all()
    assert frame["title"].str.endswith("Shop Example").all()
    assert set(frame["device_type"]) == {"desktop", "mobile", "tablet"}
    assert frame[["user_agent", "os", "browser", "country", "locale"]].notna().all().all()
    for agent, device in (
        frame.groupby("user_agent")[["device_type", "os", "browser"]].first().iterrows()
    ):
        assert describe_client(str(agent)) == tuple(device), agent


def test_referrer_is_the_previous_page_within_a_visit(run: Run) -> None:
    views = of_event(run.frame, "page_view").sort_values(["anonymous_id", "timestamp"])
    previous_url = views.groupby("anonymous_id")["url"].shift()
    same_visit = (
        views["timestamp"] - views.groupby("anonymous_id")["timestamp"].shift() < SESSION_GAP
    )
    assert (views.loc[same_visit, "referrer"] == previous_url[same_visit]).all()
    external = views.loc[~same_visit, "referrer"].dropna()
    assert not external.str.startswith("https://shop.example").any()


def test_utm_tags_only_on_the_first_page_view_of_campaign_visits(run: Run) -> None:
    tagged = run.frame[run.frame["utm_source"].notna()]
    assert (tagged["event"] == "page_view").all()
    first = first_per(run.frame, "user")
    channel = run.users.loc[first.index, "channel"]
    paid = first[channel == "paid_search"]
    assert len(paid) > 0
    assert (paid["utm_source"] == "google").all()
    assert (paid["utm_medium"] == "cpc").all()
    assert first.loc[channel.isin(["organic", "direct"]), "utm_source"].isna().all()
    assert (first.loc[channel == "organic", "referrer"] == "https://www.google.com/").all()


# --- Clicks, scrolls, hovers ------------------------------------------------------


def test_clicks_have_coordinates_inside_the_viewport(run: Run) -> None:
    coordinates = ["x", "y", "viewport_width", "viewport_height"]
    clicks = of_event(run.frame, "click")
    assert clicks[coordinates].notna().all().all()
    assert ((clicks["x"] >= 0) & (clicks["x"] < clicks["viewport_width"])).all()
    assert (clicks["y"] >= 0).all()
    assert run.frame.loc[run.frame["event"] != "click", coordinates].isna().all().all()
    assert clicks["props"].map(lambda p: bool(p["element"])).all()


def test_some_clicks_are_rage_clicks(run: Run) -> None:
    clicks = of_event(run.frame, "click").sort_values(["anonymous_id", "timestamp"])
    third = clicks.groupby("anonymous_id")[["timestamp", "x", "y"]].shift(-2)
    second = clicks.groupby("anonymous_id")[["x", "y"]].shift(-1)
    within_second = third["timestamp"] - clicks["timestamp"] <= pd.Timedelta(seconds=1)
    spread = pd.concat(
        [(other[axis] - clicks[axis]).abs() for other in (second, third) for axis in ("x", "y")],
        axis=1,
    ).max(axis=1)
    rage_starts = within_second & (spread <= 30)
    assert rage_starts.sum() >= 5
    assert rage_starts.mean() < 0.05  # frustration, not the norm


def test_scroll_milestones_and_page_leave(run: Run) -> None:
    depths = of_event(run.frame, "scroll")["props"].map(lambda p: p["depth"])
    assert set(depths) == {25, 50, 75, 100}
    leaves = pd.DataFrame(list(of_event(run.frame, "page_leave")["props"]))
    assert (leaves["dwell_ms"] >= 1000).all()
    assert leaves["max_scroll"].between(1, 100).all()
    assert len(leaves) == pytest.approx((run.frame["event"] == "page_view").sum(), abs=10)


def test_hovers_come_from_pointer_devices(run: Run) -> None:
    hovers = of_event(run.frame, "hover")
    assert len(hovers) > 0
    assert (hovers["device_type"] == "desktop").all()
    assert hovers["props"].map(lambda p: p["duration_ms"] > 0).all()


# --- Time -----------------------------------------------------------------------


def test_visits_are_split_by_a_30_minute_gap(run: Run) -> None:
    gaps = run.frame.groupby("user")["timestamp"].diff().dropna()
    # Within a visit events are at most a page's dwell apart; visits are hours apart.
    assert not gaps.between(pd.Timedelta(minutes=10), pd.Timedelta(hours=1)).any()
    sessions = (gaps > SESSION_GAP).groupby(run.frame.loc[gaps.index, "user"]).sum() + 1
    counted = sessions.reindex(run.users.index, fill_value=1)
    assert (counted == run.users["n_sessions"]).all()


def test_weekends_are_busier(run: Run) -> None:
    views = of_event(run.frame, "page_view")["timestamp"]
    per_day = views.groupby(views.dt.floor("D")).size()
    weekend = per_day[per_day.index.day_of_week >= 5].mean()
    weekday = per_day[per_day.index.day_of_week < 5].mean()
    assert weekend > 1.15 * weekday


def test_nights_are_quiet_in_local_time(run: Run) -> None:
    offsets = {country.code: country.utc_offset_minutes for country in COUNTRIES_TABLE}
    views = of_event(run.frame, "page_view")
    local_hour = (
        views["timestamp"] + pd.to_timedelta(views["country"].map(offsets), unit="min")
    ).dt.hour
    night = local_hour.between(2, 5).sum()
    evening = local_hour.between(18, 21).sum()
    assert night < 0.3 * evening


# --- Personas ---------------------------------------------------------------------


def test_personas_behave_differently(run: Run) -> None:
    users = run.users
    purchases = (
        of_event(run.frame, "purchase").groupby("user").size().reindex(users.index, fill_value=0)
    )
    purchases_per_user = purchases.groupby(users["persona"]).mean()
    assert purchases_per_user["buyer"] > 3 * purchases_per_user["browser"]
    assert purchases_per_user["loyal"] > purchases_per_user["churner"]
    sessions = users.groupby("persona")["n_sessions"].mean()
    assert sessions["loyal"] > 1.5 * sessions["browser"]
    assert set(users["persona"]) == set(PERSONAS)


def test_bargain_hunters_buy_on_sale(run: Run) -> None:
    carts = of_event(run.frame, "add_to_cart")
    on_sale = (
        carts["props"]
        .map(lambda p: p["on_sale"])
        .groupby(run.users.loc[carts["user"], "persona"].to_numpy())
        .mean()
    )
    assert on_sale["bargain_hunter"] > 1.5 * on_sale["buyer"]


def test_churners_drop_out_early(run: Run) -> None:
    users = run.users
    midpoint = pd.Timestamp(SPEC.start) + pd.Timedelta(days=SPEC.days / 2)
    early = users[users["first_seen"] < midpoint - pd.Timedelta(days=3)]
    late_days = (
        run.frame[run.frame["timestamp"] >= midpoint]
        .groupby("user")["timestamp"]
        .apply(lambda t: t.dt.floor("D").nunique())
        .reindex(early.index, fill_value=0)
    )
    active_days = late_days.groupby(early["persona"]).mean()
    assert active_days["churner"] < 0.5 * active_days["buyer"]
    assert active_days["churner"] < 0.5 * active_days["loyal"]
    churned = users.groupby("persona")["churned"].mean()
    assert churned["churner"] > 0.6
    assert churned["loyal"] < 0.3
    assert (users["churned"] == users["churned_at"].notna()).all()


def test_no_visit_starts_after_churn(run: Run) -> None:
    churned = run.users[run.users["churned"]]
    last_event = run.frame.groupby("user")["timestamp"].max().reindex(churned.index)
    # The last visit began before the churn time; it may run on for a while.
    assert (last_event < churned["churned_at"] + pd.Timedelta(hours=3)).all()


# --- Commerce ---------------------------------------------------------------------


def test_purchases_follow_add_to_cart_by_the_same_device(run: Run) -> None:
    carts = of_event(run.frame, "add_to_cart")
    products = carts["props"].map(lambda p: p["product_id"])
    first_added_at = carts.groupby([carts["anonymous_id"], products])["timestamp"].min()
    for anonymous_id, props, timestamp in of_event(run.frame, "purchase")[
        ["anonymous_id", "props", "timestamp"]
    ].itertuples(index=False):
        for product in props["product_ids"]:
            assert first_added_at[(anonymous_id, product)] < timestamp


def test_checkout_value_matches_the_cart_and_the_order(run: Run) -> None:
    checkouts = of_event(run.frame, "checkout_started")
    assert checkouts["props"].map(lambda p: p["cart_size"] >= 1 and p["value"] > 0).all()
    purchases = of_event(run.frame, "purchase")
    # The checkout an order completes is the latest one of the same device before it.
    matched = pd.merge_asof(
        purchases.sort_values("timestamp"),
        checkouts.sort_values("timestamp"),
        on="timestamp",
        by="anonymous_id",
        suffixes=("", "_checkout"),
    )
    revenue = matched["props"].map(lambda p: p["revenue"])
    value = matched["props_checkout"].map(lambda p: p["value"])
    items = matched["props"].map(lambda p: len(p["product_ids"]))
    size = matched["props_checkout"].map(lambda p: p["cart_size"])
    assert np.allclose(revenue, value)
    assert (items == size).all()


def test_complements_are_viewed_after_adding_to_cart(run: Run) -> None:
    catalogue = run.simulation.catalogue().to_pandas().set_index("product_id")
    interest = run.frame[run.frame["event"].isin(["add_to_cart", "view_product"])].copy()
    interest["product"] = interest["props"].map(lambda p: p["product_id"])
    following = interest.groupby("anonymous_id")[["event", "product"]].shift(-1)
    after_cart = (interest["event"] == "add_to_cart") & (following["event"] == "view_product")
    pairs = zip(
        interest.loc[after_cart, "product"], following.loc[after_cart, "product"], strict=True
    )
    is_complement = [viewed in catalogue.at[added, "complements"] for added, viewed in pairs]
    # Chance alone would give 3 complements out of 200 products.
    assert np.mean(is_complement) > 0.2


# --- Identity ---------------------------------------------------------------------


def test_identify_carries_both_ids_and_follows_a_page_view(run: Run) -> None:
    frame = run.frame
    identifies = of_event(frame, "identify")
    assert identifies["user_id"].notna().all()
    assert identifies["anonymous_id"].notna().all()
    first_view = of_event(frame, "page_view").groupby("anonymous_id")["timestamp"].min()
    first_identify = identifies.groupby("anonymous_id")["timestamp"].min()
    assert (first_view[first_identify.index] < first_identify).all()


def test_user_id_appears_from_the_identify_on(run: Run) -> None:
    frame = run.frame
    first_identify = of_event(frame, "identify").groupby("anonymous_id")["timestamp"].min()
    identified_since = frame["anonymous_id"].map(first_identify)
    assert (frame["user_id"].notna() == (frame["timestamp"] >= identified_since)).all()


def test_sign_ups_match_ground_truth(run: Run) -> None:
    sign_ups = of_event(run.frame, "sign_up")
    assert sign_ups["user_id"].notna().all()
    signed_up = run.users[run.users["user_id"].notna()]
    assert sorted(sign_ups["user"]) == sorted(signed_up.index)
    at = sign_ups.set_index("user")["timestamp"]
    assert (at[signed_up.index] == signed_up["signed_up_at"]).all()
    identify_at = of_event(run.frame, "identify").groupby("user")["timestamp"].min()
    assert (identify_at[signed_up.index] <= signed_up["signed_up_at"]).all()
    owners = sign_ups.set_index("user")["user_id"]
    assert (owners[signed_up.index] == signed_up["user_id"]).all()


def test_some_members_return_on_a_second_device(run: Run) -> None:
    frame = run.frame
    devices = frame.dropna(subset=["user_id"]).groupby("user_id")["anonymous_id"].nunique()
    assert (devices == 2).sum() >= 5
    assert devices.max() == 2
    second = run.users.dropna(subset=["second_anonymous_id"])
    # A second device whose login fell after the period's end stays anonymous.
    assert set(devices[devices == 2].index) <= set(second["user_id"])
    on_second = frame[frame["anonymous_id"].isin(second["second_anonymous_id"])]
    first_on_second = first_per(on_second, "anonymous_id")
    assert (first_on_second["event"] == "page_view").all()
    assert first_on_second["user_id"].isna().all()


# --- Ground truth -------------------------------------------------------------------


def test_ground_truth_users_agree_with_the_events(run: Run) -> None:
    users = run.users
    assert len(users) == SPEC.users
    assert users["anonymous_id"].is_unique
    assert run.frame["user"].notna().all()
    assert users["n_events"].sum() == run.events.num_rows
    counted = run.frame.groupby("user").size().reindex(users.index, fill_value=0)
    assert (counted == users["n_events"]).all()
    first_seen = run.frame.groupby("user")["timestamp"].min()
    assert (first_seen[users.index] == users["first_seen"]).all()
    revenue = of_event(run.frame, "purchase").assign(
        revenue=lambda f: f["props"].map(lambda p: p["revenue"])
    )
    per_user = revenue.groupby("user")["revenue"].sum().reindex(users.index, fill_value=0.0)
    assert np.allclose(per_user, users["revenue"])
    assert set(users["channel"]) == {
        "organic",
        "paid_search",
        "social",
        "email",
        "referral",
        "direct",
    }


def test_next_actions_agree_with_the_events(run: Run) -> None:
    cutoff = pd.Timestamp(SPEC.start) + pd.Timedelta(days=SPEC.days) - pd.Timedelta(days=7)
    frame = run.frame
    session_start = frame["timestamp"][
        frame.groupby("user")["timestamp"].diff().isna()
        | (frame.groupby("user")["timestamp"].diff() > SESSION_GAP)
    ]
    returning = sorted(set(frame.loc[session_start[session_start >= cutoff].index, "user"]))
    actions = run.truth.next_actions.to_pandas()
    assert len(actions) > 50
    assert (actions["cutoff"] == cutoff).all()
    owner = pd.Series(run.users.index, index=run.users["anonymous_id"])
    actions["user"] = actions["anonymous_id"].map(owner)
    assert sorted(actions["user"]) == returning

    after = frame[(frame["timestamp"] >= cutoff) & frame["event"].isin(ACTIVE)].pipe(
        first_per, "user"
    )
    expected = after["event"].reindex(actions["user"])
    assert (actions["next_action"].fillna("-").to_numpy() == expected.fillna("-").to_numpy()).all()
    expected_at = after["timestamp"].reindex(actions["user"]).reset_index(drop=True)
    assert actions["next_action_at"].equals(expected_at.rename("next_action_at"))
    key = frame[(frame["timestamp"] >= cutoff) & frame["event"].isin(ACTIVE - {"click"})].pipe(
        first_per, "user"
    )
    expected_key = key["event"].reindex(actions["user"]).fillna("-").to_numpy()
    assert (actions["next_key_action"].fillna("-").to_numpy() == expected_key).all()
    assert actions["next_key_action"].nunique() >= 3
    assert (
        actions["user_id"].fillna("-").to_numpy()
        == run.users.loc[actions["user"], "user_id"].fillna("-").to_numpy()
    ).all()


# --- Scale ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_million_events_in_seconds() -> None:
    """About 18,000 users give a million events over 30 days, fast."""
    started = time.perf_counter()
    rows = sum(batch.num_rows for batch in simulate(SimulationSpec(users=18_000, days=30)))
    elapsed = time.perf_counter() - started
    assert 800_000 < rows < 1_300_000
    assert elapsed < 30, f"{rows} events took {elapsed:.1f} s"


def test_events_grow_with_users() -> None:
    def events(users: int) -> int:
        return sum(
            batch.num_rows for batch in simulate(SimulationSpec(users=users, days=30, seed=2))
        )

    assert 1.6 < events(800) / events(400) < 2.4


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("users", "days"), [(1, 1), (3, 2), (8, 7)])
def test_tiny_worlds_still_work(users: int, days: int, seed: int) -> None:
    simulation = Simulation(SimulationSpec(users=users, days=days, seed=seed))
    events = pa.concat_tables(simulation.batches(max_rows=5))
    truth = simulation.ground_truth()
    assert truth.users.num_rows == users
    assert pc.sum(truth.users.column("n_events")).as_py() == events.num_rows > 0


def test_start_is_respected() -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    events = pa.concat_tables(simulate(SimulationSpec(users=20, days=3, start=start)))
    timestamps = events.column("timestamp").to_pylist()
    assert min(timestamps) >= start
    assert max(timestamps) < start + timedelta(days=3)
