"""index.html: a static leaderboard page — sortable tables (inline JS), plots and image grids linked by
relative path. No server, no asset fetched from anywhere: open the file from the run directory."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from harness.reports.board import Board
from harness.reports.tables import display_table, selection_table, shown_cells

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 9px; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
tr.selected td { background: #eef6ee; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #eee; }
figure.grid img { max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
.notes li { color: #444; }
"""

# Sorting reads each cell's data-sort (numbers compare numerically, missing values last in either order).
SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), tbody = table.tBodies[0];
  const col = Array.prototype.indexOf.call(th.parentNode.children, th);
  const numeric = th.dataset.type === 'number';
  const dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
  for (const other of th.parentNode.children) other.removeAttribute('aria-sort');
  th.setAttribute('aria-sort', dir);
  const key = tr => tr.children[col].dataset.sort;
  const rows = Array.from(tbody.rows);
  rows.sort((a, b) => {
    let x = key(a), y = key(b);
    if (numeric) {
      x = x === '' ? NaN : parseFloat(x); y = y === '' ? NaN : parseFloat(y);
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
      return dir === 'ascending' ? x - y : y - x;
    }
    return dir === 'ascending' ? x.localeCompare(y) : y.localeCompare(x);
  });
  for (const tr of rows) tbody.appendChild(tr);
}
document.addEventListener('DOMContentLoaded', () => {
  for (const th of document.querySelectorAll('table.sortable th')) th.addEventListener('click', () => sortTable(th));
});
"""


def _sort_keys(board: Board, shown: pd.DataFrame) -> dict[str, list]:
    """The raw value behind each displayed column (what sorting compares)."""
    t = shown_cells(board)
    keys: dict[str, list] = {"model": list(t.model), "steps": list(t.steps), "cfg": list(t.cfg),
                             "NFE": list(t.nfe_mean), "s/img": list(t.sec_per_image), "n": list(t.n)}
    for m in [*board.metrics, *board.cost_metrics]:
        keys[next(c for c in shown.columns if c.rsplit(" ", 1)[0] == m)] = list(t[m])
    if board.scores is not None:
        keys["rank"], keys["MMHM ↑"] = list(t["rank"]), list(t.mmhm)
    return keys


def _key_text(value) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None or pd.isna(value) else repr(float(value))


def html_table(shown: pd.DataFrame, keys: dict[str, list], table_id: str, selected: list[bool] | None = None) -> str:
    numeric = {c for c, vals in keys.items() if not any(isinstance(v, str) for v in vals)}
    head = "".join(f'<th data-type="{"number" if c in numeric else "text"}">{html.escape(str(c))}</th>'
                   for c in shown.columns)
    body = []
    for i, (_, r) in enumerate(shown.iterrows()):
        cls = ' class="selected"' if selected and selected[i] else ""
        tds = "".join(f'<td data-sort="{html.escape(_key_text(keys[c][i] if c in keys else r[c]))}">'
                      f"{html.escape(str(r[c]))}</td>" for c in shown.columns)
        body.append(f"<tr{cls}>{tds}</tr>")
    return (f'<table class="sortable" id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _figures(paths: list[Path], root: Path, css: str = "") -> str:
    out = []
    for png in (p for p in paths if p.suffix == ".png"):
        rel, pdf = png.relative_to(root).as_posix(), png.with_suffix(".pdf").relative_to(root).as_posix()
        out.append(f'<figure class="{css}"><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" '
                   f'alt="{html.escape(png.stem)}"></a><figcaption>{html.escape(png.stem)} · '
                   f'<a href="{html.escape(pdf)}">PDF</a></figcaption></figure>')
    return "\n".join(out)


def leaderboard_html(boards: list[Board], root: Path, plots: dict[str, list[Path]], grids: dict[str, list[Path]],
                     description: str = "", extra_links: list[Path] = ()) -> str:
    parts = ["<h1>Leaderboard</h1>"]
    if description:
        parts.append(f"<p><em>{html.escape(description)}</em></p>")
    links = [p.relative_to(root).as_posix() for p in extra_links]
    if links:
        parts.append("<p>" + " · ".join(f'<a href="{html.escape(s)}">{html.escape(s)}</a>' for s in links) + "</p>")
    if not boards:
        parts.append("<p>No metric rows (the protocol lists no metrics).</p>")
    for i, b in enumerate(boards):
        shown = display_table(b)
        selected = [bool(s) for s in shown.get("selected as", pd.Series([""] * len(shown)))]
        parts += [f"<h2>{html.escape(b.dataset)}</h2>", html_table(shown, _sort_keys(b, shown), f"board-{i}", selected)]
        if b.selection is not None:
            sel = selection_table(b)
            keys = {"model rank": list(b.selection.model_rank), "steps": list(b.selection.steps),
                    "cfg": list(b.selection.cfg), "MMHM": list(b.selection.mmhm),
                    **{m: list(b.selection[m]) for m in b.scores.metrics}}
            parts += ["<h3>Selection per model</h3>", html_table(sel, keys, f"selection-{i}"),
                      "<p>≈ marks a rank whose 95% bootstrap CI overlaps the next one's (inside the noise).</p>"]
        if b.notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in b.notes) + "</ul>")
        parts += ["<h3>Plots</h3>", _figures(plots.get(b.dataset, []), root)]
        if grids.get(b.dataset):
            parts += ["<h3>Same-seed image grid</h3>", _figures(grids[b.dataset], root, "grid")]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Leaderboard</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
