"""``gnomon sql``: a read-only DuckDB query over the store's ``activations`` and ``examples``.

Two guards: the statement must be a single query (DuckDB's own parser classifies it;
SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW and SUMMARIZE pass; COPY, ATTACH, PRAGMA, SET,
INSERT, EXPLAIN... do not), and the connection (``pipeline.contrast.StoreDB``) cannot
write files at all, so a statement that slips past the first guard still cannot change
the store.

    gnomon sql "SELECT layer, count(*) FROM activations GROUP BY layer ORDER BY layer"
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.cli.commands.args import add_options
from jobs.cli.jsonout import dumps
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: duckdb, numpy, pyarrow (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="one SELECT / WITH / DESCRIBE / SHOW statement over `activations` and `examples`")
    add_options(p, json="print rows as a JSON list of objects")
    p.add_argument("--limit", type=int, default=100, help="rows to print (0: all; default 100)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit (default 2GB; no spilling)")


def check_read_only(con: Any, query: str) -> None:
    """Refuse anything but one read-only statement, using DuckDB's parser."""
    import duckdb

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise GnomonError(f"cannot parse the query: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise GnomonError(f"give exactly one statement, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise GnomonError(f"only read-only queries (SELECT, WITH, DESCRIBE, SHOW) are allowed, "
                          f"not {statements[0].type.name}")


def _cell(value: Any, width: int = 48) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(names: list[str], rows: list[dict]) -> str:
    """An aligned plain-text table (long cells such as vectors are cut)."""
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def report_skipped(shards: list[str], examples: list[str]) -> None:
    """Say on stderr what the views leave out and why: a query over a store with a
    corrupted shard answers from the others, and its smaller counts must not pass silently."""
    def reasons(items: list[str]) -> str:
        more = f"; and {len(items) - 3} more" if len(items) > 3 else ""
        return "; ".join(items[:3]) + more

    if shards:
        n = len(shards)
        print(f"gnomon sql: skipped {n} shard{'s' if n != 1 else ''} that fail{'s' if n == 1 else ''} their "
              f"manifest checks ({reasons(shards)}): `gnomon store ls --verify` lists them, "
              "`gnomon store repair` collects them again", file=sys.stderr)
    if examples:
        print(f"gnomon sql: skipped {len(examples)} examples file{'s' if len(examples) != 1 else ''} "
              f"({reasons(examples)}): collect the dataset again to rewrite it", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import duckdb

    from pipeline.contrast import StoreDB

    if args.limit < 0:
        raise GnomonError("--limit must be >= 0")
    with StoreDB(gnomon_home(), memory_limit=args.memory_limit) as db:
        check_read_only(db.con, args.query)
        try:
            table = db.query(args.query, limit=args.limit + 1 if args.limit else None)
        except duckdb.Error as e:
            raise GnomonError(f"query failed: {str(e).splitlines()[0]}") from None
        report_skipped(db.skipped[:db.skipped_shards], db.skipped[db.skipped_shards:])
    rows = table.to_pylist()
    more = bool(args.limit) and len(rows) > args.limit
    rows = rows[:args.limit] if args.limit else rows
    if args.json:
        print(dumps(rows, default=str))
    else:
        print(format_table(table.column_names, rows))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{', more not shown: raise --limit' if more else ''})")
    return 0
