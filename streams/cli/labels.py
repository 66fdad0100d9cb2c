"""``pairstream labels``: list, inspect and override pair labels (a manual label always wins)."""

from __future__ import annotations

import json
import sys

from streams.cli.common import command, settings_from
from streams.core.config import Settings
from streams.core.events import MAX_ID_CHARS
from streams.core.records import TIERS
from streams.core.storage import open_storage
from streams.core.storage.labels import LabelRow, effective_labels, write_labels
from streams.labelling.quality import gold_report, review_queue


def register(sub) -> None:
    p = command(sub, "labels", cmd_labels, help="list, inspect and override pair labels",
                description="""Pair labels in ClickHouse. A manual label (source manual) always wins over
                    default, LLM and heuristic ones. Embedded chDB is one process at a time: stop
                    the worker first.""", data_dir=True)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="effective labels, newest first")
    a.add_argument("--source", choices=["default", "behaviour", "llm", "heuristic", "manual"])
    a.add_argument("--tier", choices=TIERS)
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--json", action="store_true", help="JSON lines")
    a = actions.add_parser("show", help="every label of one pair, with per-dimension reasons")
    a.add_argument("item_a")
    a.add_argument("item_b")
    a = actions.add_parser("set", help="override a pair's label (source manual): the gold set")
    a.add_argument("item_a")
    a.add_argument("item_b")
    a.add_argument("score", type=float, help="1..10")
    a.add_argument("--dims", help="per-dimension gold scores too, e.g. category=8,colour=3")
    a.add_argument("--reason", default="", help="why (kept with the label)")
    a = actions.add_parser("quality", help="each label source, the model and the published score "
                                           "against the manual labels: MAE, accuracy, Cohen's kappa")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("consistency", help="score labelled pairs again with the configured backend "
                                               "(PAIRSTREAM_LLM_BACKEND) and report how often it agrees "
                                               "with itself, per dimension")
    a.add_argument("--pairs", type=int, default=100, help="labelled pairs to score (manual ones first)")
    a.add_argument("--repeats", type=int, default=2, help="scorings of each pair (>= 2)")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("review", help="unreviewed pairs where label, model and behaviour "
                                          "disagree, highest impact (spread x ln(1+co-clicks)) first",
                           description="""Each pair as a card: both products field by field (title,
                               category, brand, colour, condition, model, price), every opinion
                               (the label's source, the model, behaviour), co-clicks, users, lift,
                               Swing and the label's dimensions. With --interactive one key sets
                               the label: 1-9, 0 for 10 (written as a manual label, which wins
                               everywhere), s or Enter skips, q quits.""")
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--json", action="store_true", help="JSON lines")
    a.add_argument("--interactive", action="store_true", help="label as you go, one key a pair")


def cmd_labels(args) -> int:
    return run(settings_from(args), args)


def _pair(a: str, b: str) -> tuple[str, str]:
    for value in (a, b):
        if not value or len(value) > MAX_ID_CHARS:
            raise SystemExit(f"item ids must be 1..{MAX_ID_CHARS} characters: {value!r}")
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
        if args.action == "quality":
            from streams.core.storage.label_worth import label_worth

            report = gold_report(storage)
            report["behaviour"] = label_worth(storage, settings.tier_medium)
            return _print_quality(report, args.json)
        if args.action == "consistency":
            return _consistency(settings, storage, args)
        if args.action == "review":
            return _review(storage, args)
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
        dims = _dims(args.dims)
        write_labels(storage, [LabelRow(a, b, args.score, "manual", "manual", "none", "", "",
                                        dim_scores=dims,
                                        dim_reasons={"all": args.reason or "manual override"})])
        print(f"{a} | {b}: manual label {args.score:g} written; it wins over other sources")
        return 0
    finally:
        storage.close()


def _review(storage, args) -> int:
    """``labels review``: the cards, or JSON lines, or the interactive pass."""
    from streams.labelling.review import cards, render, review

    queue = review_queue(storage, args.limit)
    if not queue:
        print("nothing to review: no unreviewed pair has two opinions", file=sys.stderr)
        return 0
    if args.json:
        for entry in queue:
            print(json.dumps(entry))
        return 0
    if args.interactive:
        done = review(storage, queue, _read_key)
        print(f"{done['labelled']} labelled, {done['skipped']} skipped" + (" (quit)" if done["quit"] else ""))
        return 0
    deck = cards(storage, queue)
    print("\n\n".join(render(card, k, len(deck)) for k, card in enumerate(deck, 1)))
    return 0


def _read_key(prompt: str) -> str:
    """One keystroke on a terminal (no Enter needed), else one line (a pipe, a test)."""
    if not sys.stdin.isatty():
        print(prompt, end="", flush=True)
        return sys.stdin.readline()
    import termios
    import tty

    print(prompt, end="", flush=True)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        key = sys.stdin.read(1)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    print(key)
    return key


def _consistency(settings: Settings, storage, args) -> int:
    """``labels consistency``: the configured backend on labelled pairs, ``--repeats`` times."""
    import asyncio

    from streams.core.storage.items import products
    from streams.labelling.consistency import self_consistency
    from streams.labelling.labeller import build_scorer

    labelled = sorted(effective_labels(storage), key=lambda r: (r["source"] != "manual", r["item_a"], r["item_b"]))
    rows = products(storage, sorted({x for r in labelled for x in (r["item_a"], r["item_b"])}))
    pairs = [(rows[r["item_a"]], rows[r["item_b"]]) for r in labelled
             if r["item_a"] in rows and r["item_b"] in rows][: args.pairs]
    if not pairs:
        print("no labelled pairs of known items to score", file=sys.stderr)
        return 1
    scorer = build_scorer(settings)

    async def go():
        try:
            return await self_consistency(scorer, pairs, args.repeats)
        finally:
            await scorer.backend.close()

    report = asyncio.run(go())
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['backend']}: {report['pairs']} pairs x {report['repeats']} ({report['failed']} failed)")
    for name, f in [("score", report.get("overall")), *report["dimensions"].items()]:
        if f:
            print(f"  {name:10} same every time {f['exact']:.0%}, mean |diff| {f['mean_abs_diff']:.2f}, "
                  f"kappa {f['kappa'] if f['kappa'] is not None else '-'}")
    return 0


def _dims(text: str | None) -> dict[str, float]:
    """``category=8,colour=3`` -> per-dimension gold scores (1..10)."""
    out: dict[str, float] = {}
    for part in filter(None, (text or "").split(",")):
        name, _, value = part.partition("=")
        try:
            score = float(value)
        except ValueError:
            raise SystemExit(f"--dims wants name=score pairs, not {part!r}") from None
        if not name.strip() or not 1 <= score <= 10:
            raise SystemExit(f"--dims wants name=score with score within 1..10, not {part!r}")
        out[name.strip()] = score
    return out


def _print_quality(report: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report))
        return 0
    behaviour = report.get("behaviour") or {}
    if behaviour.get("sources"):
        print(f"against behaviour on pairs with >= {behaviour['min_count']} co-clicks (goes together = "
              f"behaviour score of lift >= {report['compatible_at']}); worth = max(0, 2 AUC - 1):")
        print(f"{'source':20} {'n':>5} {'positives':>9} {'AUC':>6} {'worth':>6}")
        for source, e in behaviour["sources"].items():
            auc = "-" if e["auc"] is None else f"{e['auc']:.3f}"
            worth = "-" if e["worth"] is None else f"{e['worth']:.3f}"
            note = "  (circular: derived from lift)" if e["circular"] else (
                "  (at chance: worth nothing)" if e["worth"] == 0 else "")
            print(f"{source:20} {e['n']:>5} {e['behaviour_positives']:>9} {auc:>6} {worth:>6}{note}")
        print()
    if not report["gold_pairs"]:
        print("no gold set yet: label pairs by hand with `pairstream labels set A B SCORE`", file=sys.stderr)
        return 0
    print(f"against {report['gold_pairs']} manual labels (goes together = score >= {report['compatible_at']}):")
    print(f"{'source':20} {'n':>5} {'MAE':>6} {'accuracy':>9} {'kappa':>6}")
    for source, entry in report["sources"].items():
        print(f"{source:20} {entry['n']:>5} {entry['mae']:>6.2f} {entry['accuracy']:>9.3f} {entry['kappa']:>6.3f}")
        for dim, d in entry["dimensions"].items():
            print(f"  {dim:18} {d['n']:>5} {d['mae']:>6.2f} {d['accuracy']:>9.3f} {d['kappa']:>6.3f}")
    return 0
