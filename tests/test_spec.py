"""searchkit.spec: one meaning for query specs and filters, and nothing but a QueryError (naming
the field) for input it cannot read."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchkit.errors import QueryError
from searchkit.query import stored_formats, time_ns
from searchkit.spec import (FieldError, QUERY_KEYS, Weights, parse_date, parse_filters,
                            parse_query_line, parse_query_spec, parse_threshold)


# ---- dates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value,end,expected", [
    ("2024", False, datetime(2024, 1, 1)),
    ("2024", True, datetime(2024, 12, 31, 23, 59, 59, 999999)),
    ("2024-02", True, datetime(2024, 2, 29, 23, 59, 59, 999999)),
    ("2024-12", True, datetime(2024, 12, 31, 23, 59, 59, 999999)),
    ("2024-06-03", True, datetime(2024, 6, 3, 23, 59, 59, 999999)),
    ("2024-06-03T10:30", True, datetime(2024, 6, 3, 10, 30)),
])
def test_dates_take_a_year_month_day_or_iso_and_an_end_covers_its_period(value, end, expected):
    assert parse_date(value, end=end) == expected


@pytest.mark.parametrize("value", ["9999", "9999-12", "9999-12-31"])
def test_an_end_date_in_year_9999_is_the_last_representable_instant(value):
    assert parse_date(value, "before", end=True) == datetime.max


def test_far_date_bounds_are_valid_filters_clamped_to_what_the_store_holds():
    f = parse_filters(after="0001-01-01", before="9999", date_field="modified")
    assert time_ns(f.date_from) == -2**63 and time_ns(f.date_to) == 2**63 - 1


def test_a_zoned_time_is_read_as_local_time():
    moment = parse_date("2024-06-03T10:30:00+00:00")
    assert moment.tzinfo is None
    assert moment.timestamp() == datetime.fromisoformat("2024-06-03T10:30:00+00:00").timestamp()


@pytest.mark.parametrize("kwargs,field", [
    ({"after": "yesterday"}, "after"), ({"before": "2024-13"}, "before"),
    ({"date_field": "bogus"}, "date_field"), ({"min_width": 99999999999999999999}, "min_width"),
    ({"min_height": -1}, "min_height"), ({"min_width": "wide"}, "min_width"),
    ({"formats": ["exe"]}, "format"), ({"after": "2025", "before": "2024"}, "after"),
    ({"glob": "bad\udcffname"}, "glob"),
])
def test_bad_filter_values_name_their_field(kwargs, field):
    with pytest.raises(FieldError) as e:
        parse_filters(**kwargs)
    assert e.value.field == field


def test_date_field_is_checked_even_without_a_date():
    with pytest.raises(FieldError, match="date_field"):
        parse_filters(date_field="bogus")


def test_formats_are_repeatable_comma_separated_and_jpeg_includes_camera_mpo():
    f = parse_filters(formats=["jpg,.PNG", "tif"])
    assert f.formats == ("jpg", "png", "tif")
    assert stored_formats(f.formats) == ["JPEG", "MPO", "PNG", "TIFF"]


def test_zero_min_width_means_no_minimum():
    assert parse_filters(min_width=0, min_height="0").active() is False


# ---- query specs -----------------------------------------------------------------------------
def test_a_string_not_is_one_negative_term():
    spec = parse_query_spec({"text": "beach", "not": "people"})
    assert spec.query.negatives == [("people", 0.5)]


def test_every_term_takes_one_value_or_a_list_with_its_weight():
    spec = parse_query_spec({"text": ["a", "b"], "image": "x.jpg", "like": [3], "k": 4.0,
                             "text_weight": 2, "like_weight": 0.5},
                            default_weights=Weights(not_=0.3))
    q = spec.query
    assert q.texts == [("a", 2.0), ("b", 2.0)] and q.images == [("x.jpg", 1.0)]
    assert q.like == [(3, 0.5)] and spec.k == 4 and spec.weights.not_ == 0.3


@pytest.mark.parametrize("obj,field", [
    ({"text": 5}, "text"), ({"text": [["a"]]}, "text"), ({"image": 5}, "image"),
    ({"k": 1e999}, "k"), ({"k": 0}, "k"), ({"k": True}, "k"), ({"k": 2.5}, "k"),
    ({"like": -1}, "like"), ({"like": 2**63}, "like"), ({"like": "3"}, "like"),
    ({"text_weight": float("nan")}, "text_weight"), ({"not_weight": 1e300}, "not_weight"),
    ({"text": "  "}, "text"), ({"text": "a\ud800"}, "text"), ({"txt": "a"}, "txt"),
    (["a"], "query"), ("text", "query"),
])
def test_bad_query_specs_name_their_field(obj, field):
    with pytest.raises(FieldError) as e:
        parse_query_spec(obj)
    assert e.value.field == field


@pytest.mark.parametrize("line", ['{"text": ', "{" * 100_000, '{"k": ' + "9" * 5000 + "}"])
def test_unreadable_json_lines_are_query_errors(line):
    with pytest.raises(FieldError, match="query"):
        parse_query_line(line)


def test_a_plain_line_is_its_text():
    assert parse_query_line("a red {bicycle}", default_k=3).query.texts == [("a red {bicycle}",
                                                                            1.0)]


def test_threshold_must_be_finite():
    assert parse_threshold(None) is None and parse_threshold(0.25) == 0.25
    for bad in (float("nan"), float("inf"), "0.5"):
        with pytest.raises(FieldError, match="threshold"):
            parse_threshold(bad)


# ---- properties ------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
SPEC = st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=6), JSON, max_size=5)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
FILTER_VALUE = st.none() | ANY_TEXT | st.integers() | st.sampled_from(
    ["2024", "2024-02", "9999-12-31", "0001-01-01", "2024-06-03T10:30+14:00", "jpg,png"])


@settings(max_examples=300, deadline=None)
@given(obj=JSON | SPEC)
def test_query_spec_parser_raises_nothing_but_query_errors(obj):
    try:
        spec = parse_query_spec(obj)
    except QueryError:
        return
    assert spec.k >= 1
    for text, _ in spec.query.texts + spec.query.negatives:
        assert isinstance(text, str) and text.strip()


@settings(max_examples=300, deadline=None)
@given(line=ANY_TEXT | SPEC.map(json.dumps) | JSON.map(json.dumps))
def test_query_line_parser_raises_nothing_but_query_errors(line):
    try:
        parse_query_line(line)
    except QueryError:
        pass


@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({}, optional={
    key: FILTER_VALUE for key in ("path", "glob", "after", "before", "date_field", "min_width",
                                  "min_height", "formats", "camera")}))
def test_filter_parser_raises_nothing_but_query_errors(values):
    try:
        f = parse_filters(**values)
    except QueryError:
        return
    for moment in (f.date_from, f.date_to):  # every accepted date can reach the store
        if moment is not None:
            assert -2**63 <= time_ns(moment) <= 2**63 - 1


# ---- filters reach the store with their meaning ------------------------------------------------
def test_camera_filter_matches_percent_and_underscore_literally(tmp_path, tiny_encoder):
    from PIL import Image

    from searchkit.indexer import Indexer
    from searchkit import Library, Query
    for name, model in (("literal.jpg", "Zoom 100%"), ("other.jpg", "Zoom 1000")):
        im = Image.new("RGB", (32, 24), (200, 100, 0))
        exif = im.getexif()
        exif[271], exif[272] = "ACME", model
        (tmp_path / "p").mkdir(exist_ok=True)
        im.save(tmp_path / "p" / name, exif=exif.tobytes())
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(tmp_path / "p")])

    def found(camera: str) -> set[str]:
        hits = lib.search(Query.text("x"), k=10, filters=parse_filters(camera=camera))
        return {h.path.rsplit("/", 1)[-1] for h in hits}
    assert found("100%") == {"literal.jpg"}
    assert found("acme zoom") == {"literal.jpg", "other.jpg"}
    assert found("zoom_1") == set()
