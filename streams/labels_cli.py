"""``pairstream labels``: list, inspect and override pair labels (a manual label always wins)."""

from __future__ import annotations

import json
import sys

from .config import Settings
from .storage import open_storage
from .storage.labels import LabelRow, effective_labels, write_labels


def _pair(a: str, b: str) -> tuple[str, str]:
    for value in (a, b):
        if not value or len(value) > 128:
            raise SystemExit(f"item ids must be 1..128 characters: {value!r}")
    if a == b:
        raise SystemExit("a pair needs two different items")
    return (a, b) if a < b else (b, a)


def run(settings: Settings, args) -> int:
    storage = open_storage(settings)
    try:
        if args.action == "list":
            rows = effective_labels(storage)
            rows = [r for r in rows if (not args.source or r["source"] == args.source)
                    and (not args.tier or r["tier"] == args.tier)]
            rows.sort(key=lambda r: r["labelled_at"], reverse=True)
            for row in rows[: args.limit]:
                if args.json:
                    print(json.dumps(row, default=str))
                else:
                    print(f"{row['item_a']:>12} {row['item_b']:>12}  {row['score']:5.2f}  "
                          f"{row['tier']:6} {row['source']:9} backend={row['backend']}")
            if not rows:
                print("no labels", file=sys.stderr)
            return 0
        a, b = _pair(args.item_a, args.item_b)
        if args.action == "show":
            table = storage.query_arrow(
                f"SELECT * FROM {storage.table('pair_labels')} FINAL "
                "WHERE item_a = {a:String} AND item_b = {b:String} ORDER BY labelled_at",
                {"a": a, "b": b})
            rows = table.to_pylist() if table.num_rows else []
            if not rows:
                print(f"no labels for {a} | {b}", file=sys.stderr)
                return 1
            winner = effective_labels(storage, "item_a = {a:String} AND item_b = {b:String}",
                                      {"a": a, "b": b})[0]
            print(f"{a} | {b}: effective score {winner['score']:.2f} (source {winner['source']})")
            for row in rows:
                print(f"- {row['source']} score {row['score']:.2f} tier {row['tier']} backend "
                      f"{row['backend']} model {row['model_name'] or '-'} prompt "
                      f"{row['prompt_version'] or '-'} at {row['labelled_at']}")
                scores = dict(row["dim_scores"] or [])
                for dim, reason in dict(row["dim_reasons"] or []).items():
                    score = f"{scores[dim]:.1f}" if dim in scores else "   "
                    print(f"    {dim:10} {score}  {reason}")
            return 0
        if not 1 <= args.score <= 10:
            raise SystemExit("score must be within 1..10")
        write_labels(storage, [LabelRow(a, b, args.score, "manual", "manual", "none", "", "",
                                        dim_reasons={"all": args.reason or "manual override"})])
        print(f"{a} | {b}: manual label {args.score:g} written; it wins over other sources")
        return 0
    finally:
        storage.close()
