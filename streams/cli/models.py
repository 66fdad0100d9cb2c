"""``pairstream models``: the model registry, score versions, training runs and rollback."""

from __future__ import annotations

import json
import sys

from streams.cli.common import command, settings_from


def register(sub) -> None:
    p = command(sub, "models", cmd_models, help="the model registry, score versions, training runs, rollback",
                description="""list: models and score versions (* = live). show VERSION: what the publish of a
                    score version (or of a model's newest one) decided: pairs, the blend's k, the
                    cross-encoder's share, each label source's worth, seconds (JSON). runs: training
                    runs, newest first.
                    rollback VERSION: expose the newest kept score version of a model (or a score
                    version) again, mark the model promoted, and tell the workers to reload.""", data_dir=True)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="models and score versions")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("show", help="what a publish decided")
    a.add_argument("version", help="score version, or model version (its newest score version)")
    a = actions.add_parser("runs", help="training runs")
    a.add_argument("--limit", type=int, default=20)
    a = actions.add_parser("rollback", help="serve an older version again")
    a.add_argument("version", help="model version or score version")


def cmd_models(args) -> int:
    from streams.core.storage import open_storage, registry, scores
    from streams.core.storage import runs as run_table
    from streams.publishing.promotion import announce_rollback, rollback

    settings = settings_from(args)
    storage = open_storage(settings)
    try:
        if args.action == "list":
            live = scores.live(storage)
            rows = [{"version": m["version"], "status": m["status"],
                     "spearman_vs_labels": m["metrics"].get("cross", {}).get("spearman_vs_labels"),
                     "created_at": str(m["created_at"])} for m in registry.models(storage)]
            versions = scores.versions(storage)
            if args.json:
                print(json.dumps({"models": rows, "score_versions": versions, "live": live}, default=str))
                return 0
            for r in rows:
                print(f"{r['version']:28} {r['status']:9} spearman {r['spearman_vs_labels']}")
            for v in versions:
                mark = "*" if live and v["score_version"] == live["score_version"] else " "
                print(f"{mark} {v['score_version']:44} {v['status']:9} {v['rows']} rows")
        elif args.action == "show":
            chosen = [v for v in scores.versions(storage)
                      if args.version in (v["score_version"], v["model_version"]) and v["status"] == "complete"]
            summary = scores.summary(storage, chosen[0]["score_version"]) if chosen else None
            if summary is None:
                print(f"pairstream models show: no complete score version {args.version!r} with a kept summary "
                      "(`pairstream models list` names them)", file=sys.stderr)
                return 1
            print(json.dumps(summary, indent=2, default=str))
        elif args.action == "runs":
            for r in run_table.runs(storage, args.limit):
                print(json.dumps(r, default=str))
        elif args.action == "rollback":
            target = rollback(storage, args.version)
            notified = announce_rollback(settings, target)
            print(f"live score version is now {target['score_version']} "
                  f"(model {target['model_version']}); "
                  + ("workers notified on " + settings.topic_model_updates if notified else
                     "no broker configured: workers load it when they start"))
        return 0
    finally:
        storage.close()
