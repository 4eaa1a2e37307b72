"""The ``prefillray`` command.

    prefillray route --checkpoint store/routers/<key> "Which planet is largest?" [--policy tolerance --param 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from prefillray.routing import POLICIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefillray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    route = sub.add_parser("route", help="route queries with a trained router checkpoint")
    route.add_argument("--checkpoint", required=True, help="router checkpoint URI (local dir or s3://…)")
    route.add_argument("--policy", choices=POLICIES, default=None, help="default: the checkpoint's")
    route.add_argument("--param", type=float, default=None, help="tolerance τ or λ for the policy")
    route.add_argument("--device", default="cpu")
    route.add_argument("queries", nargs="+", help="query texts ('-' reads one query per line from stdin)")
    args = parser.parse_args(argv)

    from prefillray.router import Router  # heavy imports only once the arguments are valid

    queries = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.queries == ["-"] else args.queries
    router = Router.load(args.checkpoint, device=args.device)
    for query, decision in zip(queries, router.route(queries, args.policy, args.param)):
        print(json.dumps({"query": query, **dataclasses.asdict(decision)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
