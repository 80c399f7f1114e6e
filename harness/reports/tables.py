"""Leaderboard formats from the boards: Markdown (people), CSV (tools), LaTeX (papers, booktabs)."""

from __future__ import annotations

import math

import pandas as pd

from harness.reports.board import Board
from harness.reports.results import provenance_columns

ARROW = {True: "↑", False: "↓"}
LATEX_ARROW = {True: r"$\uparrow$", False: r"$\downarrow$"}


SIGNIFICANT = 4  # significant digits of the largest of value and bounds; all three get its decimals


def fmt(value: float, digits: int = SIGNIFICANT) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}g}"


def _decimals(*numbers: float) -> int:
    """Decimal places that give the largest magnitude ``SIGNIFICANT`` significant digits (0 for large ones)."""
    biggest = max(abs(float(x)) for x in numbers)
    return 0 if biggest == 0 else max(0, SIGNIFICANT - 1 - math.floor(math.log10(biggest)))


def fmt_interval(low: float, high: float, value: float | None = None) -> str:
    """"[low, high]" with the decimals of ``value`` [low, high] alike (rounding one way keeps the order)."""
    places = _decimals(low, high, *([] if value is None else [value]))
    return f"[{low:.{places}f}, {high:.{places}f}]"


def fmt_ci(value: float, low: float, high: float) -> str:
    """"value [low, high]": value and bounds with the same decimals, so a printed interval contains its
    printed value whenever the numbers do."""
    if value is None or pd.isna(value) or pd.isna(low) or pd.isna(high):
        return fmt(value)
    places = _decimals(value, low, high)
    return f"{value:.{places}f} {fmt_interval(low, high, value)}"


def fmt_cfg(cfg: float) -> str:
    return "none" if pd.isna(cfg) else f"{cfg:g}"


def selected_by(board: Board) -> dict[str, str]:
    """cell_id → the criteria that chose it for its model ("MMHM, fid-optimal")."""
    if board.selection is None:
        return {}
    return board.selection.groupby("cell_id").criterion.agg(", ".join).to_dict()


FLOOR_RANK = "floor"  # the rank column of real-data floor rows (never ranked)


def shown_cells(board: Board) -> pd.DataFrame:
    """The cells a table lists: the real-data floor rows first (``rank`` NaN, ``floor`` True), then the board's."""
    table = board.table.assign(floor=False)
    if board.floor.empty:
        return table
    floor = board.floor.assign(floor=True).reindex(columns=table.columns.union(board.floor.columns, sort=False))
    return pd.concat([floor.assign(floor=True), table], ignore_index=True)


def display_table(board: Board) -> pd.DataFrame:
    """The human table: one string column per metric "value [CI]", MMHM with its rank and noise flag; the
    real-data floor rows on top, marked ``floor`` in the rank column and without MMHM."""
    t, chosen = shown_cells(board), selected_by(board)
    out = pd.DataFrame({"model": t.model, "steps": t.steps, "cfg": t.cfg.map(fmt_cfg), "NFE": t.nfe_mean.map(fmt),
                        "s/img": t.sec_per_image.map(fmt), "n": t.n})
    for i, (name, values) in enumerate(provenance_columns(t).items()):  # merged runs: tell repeated rows apart
        out.insert(1 + i, name, values)

    def column(m: str) -> None:
        out[f"{m} {ARROW[board.higher_is_better[m]]}"] = [
            fmt_ci(v, lo, hi) for v, lo, hi in zip(t[m], t[f"{m}_ci_low"], t[f"{m}_ci_high"], strict=True)]

    for m in board.metrics:
        column(m)
    if board.scores is not None:
        out["MMHM ↑"] = [fmt_ci(v, lo, hi) for v, lo, hi in zip(t.mmhm, t.mmhm_ci_low, t.mmhm_ci_high, strict=True)]
        out.insert(0, "rank", [FLOOR_RANK if floor else ("–" if pd.isna(r) else f"{int(r)}") + (" ≈" if f else "")
                               for r, f, floor in zip(t["rank"], t["noise"], t["floor"], strict=True)])
    for m in board.cost_metrics:  # cost columns after the quality ones (where measured: the board's notes)
        column(m)
    if board.scores is not None:
        out["selected as"] = [chosen.get(c, "") for c in t.cell_id]
    return out


def selection_table(board: Board) -> pd.DataFrame:
    s = board.selection
    out = pd.DataFrame({"model rank": [f"{int(r)}" + (" ≈" if f else "") for r, f in zip(s.model_rank, s.noise,
                                                                                        strict=True)],
                        "model": s.model, "criterion": s.criterion, "steps": s.steps, "cfg": s.cfg.map(fmt_cfg),
                        "MMHM": [fmt_ci(v, lo, hi) for v, lo, hi in zip(s.mmhm, s.mmhm_ci_low, s.mmhm_ci_high,
                                                                       strict=True)]})
    for m in board.scores.metrics:
        out[m] = s[m].map(fmt)
    return out


def _provenance(row: pd.Series) -> str:
    """" (extractor K, reference R)" for a metric row; cost rows read no extractor or reference: ""."""
    parts = [f"{what} {key}" for what, key in (("extractor", row.extractor_id), ("reference", row.reference_id)) if key]
    return f" ({', '.join(parts)})" if parts else ""


def leaderboard_markdown(boards: list[Board], description: str = "") -> str:
    head = ["# Leaderboard", ""] + ([f"> {description}", ""] if description else [])
    if not boards:
        return "\n".join(head + ["No metric rows (the protocol lists no metrics).", ""])
    out = head
    for b in boards:
        out += [f"## {b.dataset}", "", display_table(b).to_markdown(index=False), ""]
        if b.selection is not None:
            out += ["### Selection per model (MMHM argmax beside the single-metric optima)", "",
                    selection_table(b).to_markdown(index=False), "",
                    "≈ marks a rank whose 95% bootstrap CI overlaps the next one's: that order is inside the noise.",
                    ""]
        variants = b.rows.groupby("metric")[["variant", "extractor_id", "reference_id"]].first()
        out += ["Variants: " + "; ".join(f"`{m}` = {r.variant}{_provenance(r)}" for m, r in variants.iterrows()), ""]
        out += [f"- {note}" for note in b.notes] + ([""] if b.notes else [])
    return "\n".join(out)


def leaderboard_csv(boards: list[Board]) -> str:
    """Every board stacked, numbers unformatted: value and CI columns per metric, MMHM, rank, selection."""
    if not boards:
        return ""
    parts = []
    for b in boards:
        t = shown_cells(b).rename(columns={"floor": "real_floor"})
        t.insert(0, "dataset", b.dataset)
        chosen = selected_by(b)
        t["selected_as"] = [chosen.get(c, "") for c in t.cell_id]
        parts.append(t)
    return pd.concat(parts, ignore_index=True).to_csv(index=False)


# ---- LaTeX ----

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(value: float, low: float, high: float, bold: bool) -> str:
    if pd.isna(value):
        return "--"
    body = fmt_ci(value, low, high)
    return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"


def _best(values: pd.Series, higher: bool) -> set[int]:
    finite = values.dropna()
    if finite.empty:
        return set()
    target = finite.max() if higher else finite.min()
    return {i for i, v in finite.items() if math.isclose(v, target, rel_tol=0, abs_tol=0)}


def leaderboard_latex(boards: list[Board]) -> str:
    """One booktabs table per dataset; best per column in bold; each value with its 95% CI as [low, high]
    (intervals are asymmetric: a ± would hide that)."""
    out = ["% onestep-bench leaderboard; needs \\usepackage{booktabs}", ""]
    for b in boards:
        t = b.table.reset_index(drop=True)
        columns = [(m, b.higher_is_better[m], f"{latex_escape(m)} {LATEX_ARROW[b.higher_is_better[m]]}")
                   for m in b.metrics]
        if b.scores is not None:
            columns.append(("mmhm", True, r"MMHM $\uparrow$"))
        head = ["Model", "Steps", "CFG", "NFE"] + [c[2] for c in columns]
        out += [r"\begin{table}[t]", r"\centering", r"\small",
                f"\\caption{{Leaderboard on {latex_escape(b.dataset)}: value [95\\% CI] (docs/metrics.md gives "
                f"each interval's method); best per column in bold.}}",
                r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule", " & ".join(head) + r" \\",
                r"\midrule"]
        best = {name: _best(t[name], higher) for name, higher, _ in columns}
        for _, r in b.floor.iterrows():  # the real-data floor: shown for scale, never bold, never ranked
            cells = [f"\\textit{{{latex_escape(str(r.model))} (real data)}}", "--", "--", "0"]
            cells += [_latex_cell(r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high"), False)
                      for name, _, _ in columns]
            out.append(" & ".join(cells) + r" \\")
        if not b.floor.empty:
            out.append(r"\midrule")
        for i, r in t.iterrows():
            cells = [latex_escape(str(r.model)), str(int(r.steps)), fmt_cfg(r.cfg), fmt(r.nfe_mean)]
            cells += [_latex_cell(r[name], r[f"{name}_ci_low"], r[f"{name}_ci_high"], i in best[name])
                      for name, _, _ in columns]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)
