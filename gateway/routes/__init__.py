"""The gateway's HTTP routes, one module per area. A new area (e.g. the experiments admin API)
is a module with an `APIRouter` named `router`, added to `ROUTERS`."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.routes import (
    admin_checkout,
    admin_customers,
    admin_experiments,
    admin_jobs,
    admin_promotions,
    checkout,
    ops,
    points,
    wallet,
)

ROUTERS: tuple[APIRouter, ...] = (
    ops.router,
    wallet.router,
    points.router,
    checkout.router,
    admin_checkout.router,
    admin_customers.router,
    admin_promotions.router,
    admin_experiments.router,
    admin_jobs.router,
)
