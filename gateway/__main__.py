"""`python -m gateway [serve]` runs the HTTP gateway; `python -m gateway token --sub ID --roles
customer` prints a signed bearer token for the configured secret (dev and tests)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gateway.app import close, create_app
from gateway.auth import mint_token
from gateway.settings import GatewaySettings
from shared.logs import configure_logging
from shared.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP gateway (default)")
    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--sub", required=True, help="subject: the customer id, or the operator's id")
    token.add_argument("--roles", default="customer", help="comma-separated roles, e.g. customer or operator")
    token.add_argument("--ttl-seconds", type=int, default=12 * 3600)
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as error:
        print(f"gateway: configuration error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "token":
        roles = [role.strip() for role in args.roles.split(",") if role.strip()]
        print(mint_token(settings.jwt_secret, args.sub, roles, ttl_seconds=args.ttl_seconds))  # noqa: T201
        return 0
    configure_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    finally:
        close(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
