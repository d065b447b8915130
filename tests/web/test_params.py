"""The HTTP API reads filters with the CLI's parser (searchkit.spec): the same date forms with
the same meaning, and a 422 naming the parameter for anything it cannot read."""

from __future__ import annotations

import pytest


def names(r) -> set[str]:
    assert r.status_code == 200, r.text
    return {h["path"].rsplit("/", 1)[-1] for h in r.json()["hits"]}


@pytest.mark.parametrize("before", ["2000", "2000-01", "2000-01-01", "2000-01-01T12:00"])
def test_web_takes_the_cli_date_forms_and_an_end_covers_its_period(client, before):
    r = client.get("/api/search", params={"q": "x", "k": 50, "date_field": "modified",
                                          "before": before})
    assert names(r) == {"old.png"}


@pytest.mark.parametrize("params,everything", [
    ({"before": "9999-12-31"}, True), ({"before": "9999"}, True), ({"after": "0001-01-01"}, True),
    ({"after": "9999"}, False), ({"min_width": 0}, True),
])
def test_far_dates_are_valid_filters_on_the_web(client, params, everything):
    search = {"q": "x", "k": 50, "date_field": "modified"}
    every = names(client.get("/api/search", params=search))
    assert names(client.get("/api/search", params={**search, **params})) == (
        every if everything else set())


@pytest.mark.parametrize("params,name", [
    ({"after": "June"}, "after"), ({"before": "2024-02-30"}, "before"),
    ({"after": "2025", "before": "2024"}, "after"), ({"before": "10000"}, "before"),
    ({"text_contains": "x" * 201}, "text_contains"),
])
def test_unreadable_filters_are_422_naming_the_parameter(client, params, name):
    r = client.get("/api/search", params={"q": "x", **params})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{name}: ")
    assert r.json()["errors"][0]["loc"] == ["query", name]
