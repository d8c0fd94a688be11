"""HTML report pages: the one page skeleton (head, shared style, body) of every command's ``report.html``.

>>> page = html_page("locscope stain", "<h1>Virtual staining</h1>", style="figure{margin:4px}")
>>> page.startswith('<!doctype html><html><head><meta charset="utf-8"><title>locscope stain</title>')
True
"""

from __future__ import annotations

import base64
import html

#: Rules every report shares; a page adds its own with ``style=``.
STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse} "
         "td,th{padding:4px 8px;vertical-align:top;text-align:left} img{image-rendering:pixelated} "
         "figure{display:inline-block;margin:4px} code{word-break:break-all;font-size:11px}")


def html_page(title: str, body: str, style: str = "") -> str:
    """A complete HTML page.

    Parameters
    ----------
    title : str
        The page title (plain text; escaped here).
    body : str
        The page's HTML, inserted as it is (escape user text with :func:`html.escape` before).
    style : str
        CSS rules of this page, after the shared :data:`STYLE` (later rules win).

    Returns
    -------
    str
        ``<!doctype html>`` ... ``</html>`` plus a final newline.
    """
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}{' ' + style if style else ''}</style></head><body>\n{body}\n</body></html>\n")


def png_img(png: bytes, title: str = "") -> str:
    """An ``<img>`` tag holding PNG bytes inline (a ``data:`` URI), so the report is one self-contained file."""
    label = f' title="{html.escape(title)}"' if title else ""
    return f'<img{label} src="data:image/png;base64,{base64.b64encode(png).decode()}">'
