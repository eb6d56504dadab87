"""The live page: plain HTML, CSS and JavaScript shipped in the package (web/static/), served
as one document with the style and script inline, so nothing is fetched from anywhere (the
machine may be offline) and a page opened with `?token=` needs the token only once."""

from __future__ import annotations

import functools
from importlib import resources

STYLE_MARK = '<link rel="stylesheet" href="style.css">'
SCRIPT_MARK = '<script src="app.js"></script>'


@functools.cache
def page_html() -> str:
    static = resources.files("edge_gesture.web") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    css = (static / "style.css").read_text(encoding="utf-8")
    js = (static / "app.js").read_text(encoding="utf-8")
    assert STYLE_MARK in html and SCRIPT_MARK in html, "static/index.html lost its marks"
    return (html.replace(STYLE_MARK, f"<style>\n{css}</style>")
            .replace(SCRIPT_MARK, f"<script>\n{js}</script>"))
