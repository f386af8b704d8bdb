"""The explorer's HTML pieces: escaping, links, tables, Plotly figures placed in a page, and the page shell (which
inlines Plotly and the script for a static export)."""

from __future__ import annotations

import functools
import html
import urllib.parse
from collections.abc import Sequence
from typing import Any

from neuronmap.service.http import assets
from neuronmap.service.http.responses import plain

CSS = assets.CSS


@functools.cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def link(path: str, text: Any, **query: Any) -> str:
    given = {key: value for key, value in query.items() if value is not None}
    suffix = "?" + urllib.parse.urlencode(given) if given else ""
    return f"<a href='{esc(urllib.parse.quote(path) + suffix)}'>{esc(text)}</a>"


def cell(value: Any) -> str:
    value = plain(value)
    if isinstance(value, float):
        return f"<td class='num'>{value:.4g}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class='num'>{value:,}</td>"
    if isinstance(value, list):
        value = ", ".join(str(item) for item in value)
    return f"<td>{esc(value)}</td>"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, sortable: bool = False, id: str = "") -> str:
    """Rows as an HTML table; a column's cell may be pre-rendered HTML under the key ``COLUMN__html``."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{row[c + '__html']}</td>" if c + "__html" in row else cell(row.get(c)) for c in columns)
        + "</tr>"
        for row in rows
    )
    attrs = (" class='sortable'" if sortable else "") + (f" id='{id}'" if id else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot(figure: Any, div_id: str) -> str:
    return str(
        figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False, "responsive": True}
        )
    )


def shell(title: str, body: str, *, static: bool = False) -> str:
    """The page around ``body``: navigation, the stylesheet, Plotly and the explorer's script (inlined when static,
    so the file opens on its own)."""
    if static:
        scripts = f"<script>{plotly_js()}</script><script>{assets.JS}</script>"
        nav = ""
    else:
        scripts = "<script src='/static/plotly.min.js'></script><script src='/static/explorer.js'></script>"
        nav = (
            "<nav><a href='/'>Store</a><a href='/queries'>Queries</a><a href='/jobs'>Jobs</a>"
            "<a href='/compare'>Compare</a><a href='/docs'>API</a></nav>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>{esc(title)} · neuronmap</title>"
        f"<style>{assets.CSS}</style>{scripts}</head><body{' data-static=1' if static else ''}>{nav}"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
