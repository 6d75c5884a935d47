"""Sorting and paging of light rows (pure)."""

from lbtap.server.services.query import paginate

ROWS = [{"id": f"id{i}", "name": n} for i, n in enumerate(["b", "a", None, "c", "a"])]


def ids(rows):
    return [r["id"] for r in rows]


def test_sort_ascending_nulls_first_id_breaks_ties():
    page, more = paginate(ROWS, [("name", True)], limit=None, marker_row=None, page_reverse=False)
    assert ids(page) == ["id2", "id1", "id4", "id0", "id3"] and not more


def test_sort_descending():
    page, _ = paginate(ROWS, [("name", False)], limit=None, marker_row=None, page_reverse=False)
    assert ids(page) == ["id3", "id0", "id1", "id4", "id2"]


def test_limit_and_marker_walk_every_item_once():
    seen, marker = [], None
    while True:
        page, more = paginate(ROWS, [("name", True)], limit=2, marker_row=marker, page_reverse=False)
        seen += ids(page)
        if not more:
            break
        marker = page[-1]
    assert seen == ["id2", "id1", "id4", "id0", "id3"]


def test_page_reverse_returns_items_before_marker_in_order():
    marker = next(r for r in ROWS if r["id"] == "id0")
    page, more = paginate(ROWS, [("name", True)], limit=2, marker_row=marker, page_reverse=True)
    assert ids(page) == ["id1", "id4"] and more
    page, more = paginate(ROWS, [("name", True)], limit=5, marker_row=marker, page_reverse=True)
    assert ids(page) == ["id2", "id1", "id4"] and not more


def test_marker_not_in_rows_is_placed_by_its_values():
    page, _ = paginate(ROWS, [("name", True)], limit=None, marker_row={"id": "zz", "name": "a"},
                       page_reverse=False)
    assert ids(page) == ["id0", "id3"]
