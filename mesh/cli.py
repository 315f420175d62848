"""The `giftcard` command: `giftcard serve [all|<service>...]` and the operator commands
(`merchant`, `key`, `card`, `holds`, `jobs`, `audit`; see `giftcard <command> --help`).

Exit codes scripts can trust: 0 ok, 1 failure found / operation failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from common.config import load_settings
from common.money import from_decimal
from common.server import run_until_signalled
from common.telemetry import configure_logging
from mesh.services import SPECS

PROVIDERS = ("native", "paytronix", "ackroo", "radial", "clutch", "smartclixx")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="giftcard", description="Gift card payment mesh: serve it, and operate it.",
        epilog="Exit codes: 0 ok, 1 failure found or operation failed, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="YAML config file (default: $GIFTCARD_CONFIG); env GIFTCARD_* overrides")

    serve = commands.add_parser(
        "serve", parents=[config], help="run services (all in one process by default)",
        description="Run all services in one process (`all`, the default) or the named ones; "
        "services not run here are reached at endpoints.<name> (GIFTCARD_ENDPOINTS__<NAME>).",
    )
    # default is a string, not ["all"]: argparse checks a `*` positional's default against choices.
    serve.add_argument("services", nargs="*", default="all", choices=["all", *SPECS], metavar="SERVICE",
                       help=f"all (default) or any of: {', '.join(SPECS)}")
    serve.add_argument("--port", type=int, help="gRPC port (overrides grpc.port)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (overrides metrics.port)")

    merchant = commands.add_parser("merchant", help="add / list merchants",
                                   description="Merchants added here live in Redis next to the configured ones.")
    merchant_commands = merchant.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = merchant_commands.add_parser(
        "add", parents=[config], help="register a merchant at runtime",
        description="Register a merchant served by the native provider; then `giftcard key create <id>`. "
        "Vendor merchants need credentials: configure them in the config file instead.",
    )
    add.add_argument("merchant_id")
    add.add_argument("--provider", default="native", choices=PROVIDERS)
    add.add_argument("--currency", dest="currencies", action="append", metavar="CODE",
                     help="ISO 4217 currency the merchant accepts (repeatable; default USD)")
    merchant_commands.add_parser("list", parents=[config], help="configured and runtime merchants",
                                 description="Print `<merchant>\\t<config|runtime>` per merchant.")

    key = commands.add_parser("key", help="create / rotate / revoke / list merchant API keys",
                              description="API keys kept in Redis as SHA-256 digests; the key itself is "
                              "printed once, on stdout, when created.")
    key_commands = key.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("create", "a new key for the merchant (printed once)"),
                       ("list", "the merchant's keys (ids and state, never the keys)")):
        sub = key_commands.add_parser(name, parents=[config], help=text, description=text)
        sub.add_argument("merchant_id")
    rotate = key_commands.add_parser(
        "rotate", parents=[config], help="new key; the old ones expire after a grace period",
        description="Create a new key (printed once) and let the merchant's other runtime keys expire "
        "after --grace seconds, so clients can switch without downtime.",
    )
    rotate.add_argument("merchant_id")
    rotate.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                        help="how long the old keys keep working (default 3600; 0 = revoke now)")
    revoke = key_commands.add_parser(
        "revoke", parents=[config], help="revoke keys now",
        description="Revoke the merchant's runtime keys (all, or --key-id); servers stop accepting them "
        "within security.api_key_cache_seconds.",
    )
    revoke.add_argument("merchant_id")
    revoke.add_argument("--key-id", help="only this key (from `giftcard key list`)")

    card = commands.add_parser("card", help="issue / inspect native-ledger cards",
                               description="Cards on the native (Redis) provider. Output shows masked numbers only.")
    card_commands = card.add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = card_commands.add_parser("issue", parents=[config], help="provision a card with an opening balance",
                                     description="Provision a native card (active unless --inactive).")
    issue.add_argument("card_number")
    issue.add_argument("--merchant", default="demo", help="merchant id (default demo)")
    issue.add_argument("--amount", default="0", help="opening balance in major units, e.g. 25.00 (default 0)")
    issue.add_argument("--currency", default="USD")
    issue.add_argument("--inactive", action="store_true", help="issue inactive (activate later)")
    issue.add_argument("--pin-stdin", action="store_true", help="read the card's PIN from stdin")
    balance = card_commands.add_parser("balance", parents=[config], help="status, balance, held, available",
                                       description="Read a native card's status and balance.")
    balance.add_argument("card_number")
    balance.add_argument("--merchant", default="demo", help="merchant id (default demo)")
    balance.add_argument("--pin-stdin", action="store_true", help="read the card's PIN from stdin")

    holds = commands.add_parser("holds", help="open holds", description="Open holds of the native ledger.")
    holds_commands = holds.add_subparsers(dest="action", required=True, metavar="ACTION")
    holds_list = holds_commands.add_parser(
        "list", parents=[config], help="open, unexpired holds",
        description="One line per open, unexpired native hold: merchant, hold id, masked card, open and "
        "authorized amounts, expiry.",
    )
    holds_list.add_argument("--merchant", help="only this merchant")
    holds_list.add_argument("--json", action="store_true", help="one JSON object per line")

    jobs = commands.add_parser("jobs", help="run background jobs on demand",
                               description="Run a job now instead of waiting for the scheduler.")
    jobs_commands = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    jobs_run = jobs_commands.add_parser("run", help="run a job", description="Run a job now.")
    run_jobs = jobs_run.add_subparsers(dest="job", required=True, metavar="JOB")
    settlement = run_jobs.add_parser(
        "settlement", parents=[config], help="settle deferred captures (RunSettlementBatch)",
        description="Settle the deferred captures of the merchant whose API key is in $GIFTCARD_API_KEY, "
        "through the settlement API of a running mesh. Progress per batch on stderr; exit 1 if an item failed.",
    )
    settlement.add_argument("--target", default=None, help="host:port of the mesh (default: grpc.host:grpc.port)")
    settlement.add_argument("--max-items", type=int, default=0, help="items per batch (0 = configured batch size)")
    settlement.add_argument("--until-empty", action="store_true", help="repeat batches until one finds nothing")
    settlement.add_argument("--deadline", type=float, default=60.0, help="seconds per batch call (default 60)")

    audit = commands.add_parser(
        "audit", parents=[config], help="verify the native ledger's invariants",
        description="For every native card: history sums to the balance, balance >= 0, 0 <= held <= "
        "balance, held = open amount of its open holds. Prints each violation; exit 1 if any.",
    )
    audit.add_argument("--merchant", help="only this merchant's cards")
    audit.add_argument("--progress-every", type=int, default=1000, metavar="N",
                       help="progress line on stderr every N cards (0 = none)")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from mesh.runtime import ALL_SERVICES, MeshRuntime

    overrides: dict = {}
    if args.port is not None:
        overrides["grpc"] = {"port": args.port}
    if args.metrics_port is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    settings = load_settings(args.config, **overrides)
    configure_logging(settings.telemetry)
    chosen = [args.services] if isinstance(args.services, str) else args.services
    services = ALL_SERVICES if "all" in chosen else chosen
    runtime = MeshRuntime(settings, services)
    await runtime.start()
    print(
        f"giftcard: serving {', '.join(runtime.services)} on {settings.grpc.host}:{runtime.port}",
        file=sys.stderr, flush=True,
    )
    await run_until_signalled([], on_stop=runtime.stop)
    return 0


def _read_pin(args: argparse.Namespace) -> str | None:
    if not getattr(args, "pin_stdin", False):
        return None
    pin = getpass.getpass("PIN: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    return pin or None


def _admin(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mesh import admin
    from mesh.runtime import with_dev_merchant

    try:
        settings = with_dev_merchant(load_settings(args.config))
    except (OSError, ValueError) as error:
        print(f"giftcard: invalid configuration: {error}", file=sys.stderr)
        return 2
    io = admin.Io()
    action = (args.command, getattr(args, "action", None))
    if action == ("merchant", "add"):
        return admin.run(admin.merchant_add, settings, io, merchant=args.merchant_id, provider=args.provider,
                         currencies=[c.upper() for c in args.currencies or ["USD"]])
    if action == ("merchant", "list"):
        return admin.run(admin.merchant_list, settings, io)
    if action == ("key", "create"):
        return admin.run(admin.key_create, settings, io, merchant=args.merchant_id)
    if action == ("key", "list"):
        return admin.run(admin.key_list, settings, io, merchant=args.merchant_id)
    if action == ("key", "rotate"):
        return admin.run(admin.key_rotate, settings, io, merchant=args.merchant_id, grace_seconds=args.grace)
    if action == ("key", "revoke"):
        return admin.run(admin.key_revoke, settings, io, merchant=args.merchant_id, key_id=args.key_id)
    if action == ("card", "issue"):
        try:
            amount = from_decimal(args.amount, args.currency.upper()).amount_minor
        except (ValueError, KeyError) as error:
            parser.error(f"--amount {args.amount!r}: {error}")
        return admin.run(admin.card_issue, settings, io, merchant=args.merchant, card_number=args.card_number,
                         amount_minor=amount, currency=args.currency.upper(), pin=_read_pin(args),
                         inactive=args.inactive)
    if action == ("card", "balance"):
        return admin.run(admin.card_balance, settings, io, merchant=args.merchant, card_number=args.card_number,
                         pin=_read_pin(args))
    if action == ("holds", "list"):
        return admin.run(admin.holds_list, settings, io, merchant=args.merchant, as_json=args.json)
    if action == ("jobs", "run") and args.job == "settlement":
        api_key = os.environ.get("GIFTCARD_API_KEY", "")
        if not api_key:
            parser.error("jobs run settlement: set GIFTCARD_API_KEY to the merchant's API key")
        host = "127.0.0.1" if settings.grpc.host in ("0.0.0.0", "::") else settings.grpc.host
        return admin.run(admin.jobs_run_settlement, settings, io, target=args.target or f"{host}:{settings.grpc.port}",
                         api_key=api_key, max_items=args.max_items, until_empty=args.until_empty,
                         deadline=args.deadline)
    if args.command == "audit":
        return admin.run(admin.audit, settings, io, merchant=args.merchant, progress_every=args.progress_every)
    parser.error(f"unknown command {args.command}")
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return asyncio.run(_serve(args))
    return _admin(args, parser)


if __name__ == "__main__":
    raise SystemExit(main())
