"""What `bertctl doctor` found, for a person: the terminal summary, doctor.html and its PNGs.

    print_doctor_report(console, report)    # counts, then the first rows of each finding
    write_html(report, out_dir)             # doctor.html + balance.png, lengths.png, label_issues.png

The PNGs use plots.py's figure and atomic save (matplotlib's object API on the Agg canvas); the two figures
drawn here could move into plots.py as they are.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertctl.plots import _figure, _save, plot_confusion_matrix
from bertctl.runs import atomic_write_text

if TYPE_CHECKING:
    from rich.console import Console

# annotations name bertctl.doctor.DoctorReport as a string: doctor imports this module, never the reverse

SHOWN = 5  # rows per finding in the terminal; doctor.json and doctor.html have them all
HTML_ROWS = 500  # rows per table in doctor.html, so a very dirty file still gives a page a browser opens


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _place(row: dict[str, Any]) -> str:
    return f"{row['split']} {row['where']}"


def verdict(report: "DoctorReport") -> str:
    s = report.summary()
    parts = []
    if s["leaks_exact"] or s["leaks_near"]:
        parts.append(f"{s['leaks_exact']} exact and {s['leaks_near']} near-duplicate leaks across splits")
    if s["conflict_groups"]:
        parts.append(f"{s['conflict_groups']} texts with conflicting labels ({s['conflict_rows']} rows)")
    return "; ".join(parts)


def print_doctor_report(console: "Console", report: "DoctorReport") -> None:
    from rich.table import Table

    s = report.summary()
    sizes = ", ".join(f"{name} {info['rows']}" for name, info in report.splits.items())
    console.print(f"[bold]{report.recipe}[/bold]: {sizes} rows; labels {', '.join(report.labels)}")
    table = Table("check", "found", "", box=None)
    gone = ", ".join(f"{e['split']} {e['where']} ({e['why']})" for e in report.empty[:SHOWN]) + (" ..." if len(report.empty) > SHOWN else "")
    table.add_row("empty texts/labels", str(len(report.empty)), gone or "every row has a text and a label")
    def leaked(kind: str) -> str:
        return ", ".join(f"{n} {pair.split('~')[0]} rows have a copy in {pair.split('~')[1]}" for pair, n in s["leaked_rows"][kind].items())

    table.add_row("leaks (exact)", str(s["leaks_exact"]), leaked("exact") or "after NFKC, case, punctuation and whitespace normalisation")
    table.add_row("leaks (near)", str(s["leaks_near"]), leaked("near") + f" (Jaccard >= {report.near_threshold} of word 1+2-grams)")
    table.add_row("duplicates in a split", str(s["duplicate_groups"]), f"{s['duplicate_extra_rows']} extra copies")
    table.add_row("conflicting labels", str(s["conflict_groups"]), f"{s['conflict_rows']} rows")
    b = report.balance
    balance_note = "; ".join(
        [f"{u['label']} has {u['count']} in {u['split']}" for u in b["under_min_count"][:SHOWN]]
        + [f"{name} {b['imbalance_ratio'][name]}:1" for name in b["imbalanced"]]
        + [f"{r['label']}: {r['count']} in {r['split']}, {r['train']} in train" for r in b["rare_in_train"][:SHOWN]]
    )
    table.add_row("balance", str(len(b["under_min_count"]) + len(b["imbalanced"]) + len(b["rare_in_train"])), balance_note or f"every label >= {b['min_count']} rows")
    if report.length is not None:
        shares = ", ".join(f"{name} {v['truncated_share']:.1%}" for name, v in report.length["splits"].items())
        table.add_row("truncated", str(len(report.length["truncated"])), f"at max_length {report.length['max_length']}: {shares}")
    check = report.label_check
    if check.get("skipped"):
        table.add_row("label errors", "-", f"skipped ({check['skipped']})")
    else:
        table.add_row(
            "label errors", str(len(report.label_issues)),
            f"of {check['examples']} train rows, {check['folds']} folds x {check['epochs']} epochs, out-of-fold accuracy {check['out_of_fold_accuracy']:.1%}",
        )
    console.print(table)

    def rows_table(title: str, columns: list[str], rows: list[list[str]], total: int) -> None:
        if not total:
            return
        t = Table(*columns, box=None, title=f"{title} ({min(total, SHOWN)} of {total})", title_justify="left")
        for r in rows[:SHOWN]:
            t.add_row(*r)
        console.print(t)

    rows_table("rows without a text or label", ["where", "why", "training", "text"],
               [[_place(e), e["why"], e["training"], _short(e.get("text", ""), 50)] for e in report.empty[:SHOWN]], len(report.empty))
    rows_table("leaks", ["kind", "sim", "earlier", "later", "text"],
               [[x["kind"], f"{x['similarity']:.2f}", _place(x["rows"][0]), _place(x["rows"][1]), _short(x["rows"][1]["text"])] for x in report.leaks[:SHOWN]], len(report.leaks))
    rows_table("conflicting labels", ["labels", "rows", "text"],
               [[", ".join(f"{k} x{v}" for k, v in c["labels"].items()), ", ".join(_place(r) for r in c["rows"][:4]), _short(c["rows"][0]["text"], 50)] for c in report.conflicts[:SHOWN]], len(report.conflicts))
    rows_table("duplicates", ["split", "rows", "text"],
               [[d["split"], ", ".join(r["where"] for r in d["rows"][:4]), _short(d["rows"][0]["text"], 50)] for d in report.duplicates[:SHOWN]], len(report.duplicates))
    rows_table("likely label errors, most likely first", ["where", "given", "suggested", "conf", "text"],
               [[i["where"], i["given"], i["suggested"], f"{i['confidence']:.2f}", _short(i["text"], 50)] for i in report.label_issues[:SHOWN]], len(report.label_issues))
    if report.output_dir:
        console.print(f"report: {report.output_dir}/doctor.html, {report.output_dir}/doctor.json")
    if report.fix:
        console.print(f"cleaned copies: {report.fix['dir']} ({report.fix['dropped']} rows dropped, {report.fix['to_review']} kept for review: review.csv); train on them: bertctl train {report.fix['recipe']}")


# ---------------------------------------------------------------------------------------------
# doctor.html


def plot_balance(path: Path, counts: dict[str, dict[str, int]], labels: list[str]) -> Path:
    """Label counts per split, bars side by side."""
    import numpy as np

    fig = _figure(max(6.0, 0.9 * len(labels) + 3), 4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(labels))
    for k, (split, c) in enumerate(counts.items()):
        ax.bar(x + k * width, [c.get(label, 0) for label in labels], width, label=split)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, labels=labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylabel("examples")
    ax.set_title("label counts per split")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_lengths(path: Path, length: dict[str, Any]) -> Path:
    """Token length percentiles per split against model.max_length."""
    import numpy as np

    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    names = list(length["splits"])
    x = np.arange(len(names))
    for k, key in enumerate(("p50", "p90", "p99", "max")):
        ax.bar(x + k * 0.2, [length["splits"][n][key] for n in names], 0.2, label=key)
    ax.axhline(length["max_length"], color="black", linestyle="--", label=f"max_length {length['max_length']}")
    ax.set_xticks(x + 0.3, labels=names)
    ax.set_ylabel("tokens ([CLS] and [SEP] included)")
    ax.set_title("token lengths per split")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def as_text(value: Any) -> str:
    """A report value as a person reads it, not as Python prints it: yes/no, '-' for none, 'key: value' pairs
    ({'exact': {'validation~train': 2}} -> 'exact: validation~train: 2'), lists joined by commas."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {as_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(as_text(v) for v in value) or "-"
    return str(value)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(as_text(v))}</td>" for v in r) + "</tr>" for r in rows[:HTML_ROWS])
    more = f"<p>{len(rows) - HTML_ROWS} more in doctor.json</p>" if len(rows) > HTML_ROWS else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _cell_row(row: dict[str, Any]) -> str:
    pair = f" ||| {row['text_pair']}" if "text_pair" in row else ""
    return f"{row['split']} {row['where']} [{row['label']}]: {row['text']}{pair}"


def write_html(report: "DoctorReport", out_dir: Path) -> Path:
    """doctor.html beside doctor.json: the summary, every finding as a table, and the plots."""

    out_dir = Path(out_dir)
    s = report.summary()
    parts = [f"<h1>bertctl doctor: {html.escape(report.recipe)}</h1>"]
    found = verdict(report)
    parts.append(f"<p class='{'bad' if report.serious else 'good'}'>{html.escape(found or 'no leakage and no conflicting labels')}</p>")
    parts.append(_table(["split", "file", "rows"], [[n, i["file"], i["rows"]] for n, i in report.splits.items()]))
    parts.append(_table(["finding", "count"], [[k, v] for k, v in s.items()]))
    parts.append("<h2>Rows without a text or label</h2>" + _table(["where", "why", "training", "text", "label"],
                 [[_place(e), e["why"], e["training"], e.get("text", ""), e.get("label", "")] for e in report.empty]))
    parts.append("<h2>Leaks across splits</h2>" + _table(["kind", "similarity", "earlier split row", "later split row"],
                 [[x["kind"], x["similarity"], _cell_row(x["rows"][0]), _cell_row(x["rows"][1])] for x in report.leaks]))
    parts.append("<h2>Conflicting labels</h2>" + _table(["labels", "rows"],
                 [[", ".join(f"{k} x{v}" for k, v in c["labels"].items()), " | ".join(_cell_row(r) for r in c["rows"])] for c in report.conflicts]))
    parts.append("<h2>Duplicates within a split</h2>" + _table(["split", "rows", "text"],
                 [[d["split"], ", ".join(r["where"] for r in d["rows"]), d["rows"][0]["text"]] for d in report.duplicates]))
    b = report.balance
    plot_balance(out_dir / "balance.png", b["counts"], report.labels)
    parts.append("<h2>Balance</h2><img src='balance.png' alt='label counts per split'>")
    parts.append(_table(["label", *b["counts"]], [[label, *[c[label] for c in b["counts"].values()]] for label in report.labels]))
    parts.append(_table(["split", "largest:smallest label"], [[n, r] for n, r in b["imbalance_ratio"].items()]))
    if report.length is not None:
        plot_lengths(out_dir / "lengths.png", report.length)
        parts.append("<h2>Length</h2><img src='lengths.png' alt='token lengths'>")
        parts.append(_table(["split", "examples", "p50", "p90", "p99", "max", f"truncated at {report.length['max_length']}", "[UNK]"],
                            [[n, v["examples"], v["p50"], v["p90"], v["p99"], v["max"], f"{v['truncated_share']:.1%}", f"{v['unk_share']:.2%}"] for n, v in report.length["splits"].items()]))
    parts.append("<h2>Likely label errors</h2>")
    if report.label_check.get("skipped"):
        parts.append(f"<p>skipped ({html.escape(report.label_check['skipped'])})</p>")
    else:
        parts.append(_table(["setting", "value"], [[k, v] for k, v in report.label_check.items()]))
        if report.label_issues:
            index = {label: i for i, label in enumerate(report.labels)}
            matrix = [[0] * len(report.labels) for _ in report.labels]
            for issue in report.label_issues:
                matrix[index[issue["given"]]][index[issue["suggested"]]] += 1
            plot_confusion_matrix(matrix, report.labels, out_dir / "label_issues.png", "likely label errors: given (rows) vs suggested")
            parts.append("<img src='label_issues.png' alt='given vs suggested labels'>")
        parts.append(_table(["where", "given", "suggested", "confidence", "label quality", "text"],
                            [[f"{i['split']} {i['where']}", i["given"], i["suggested"], i["confidence"], i["label_quality"], i["text"]] for i in report.label_issues]))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top;text-align:left}"
             ".bad{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}img{max-width:900px}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>bertctl doctor</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    atomic_write_text(out_dir / "doctor.html", page)
    return out_dir / "doctor.html"
