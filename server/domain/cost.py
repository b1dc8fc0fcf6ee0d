"""What a box cost so far, from its price (per started hour, capped at the monthly price)."""

from __future__ import annotations

import math


def cost_so_far(price_hourly: float, started_at: float, until: float, price_monthly: float | None = None) -> float:
    """Hours started x hourly price, capped at the monthly price; at least one hour once created."""
    hours = max(1, math.ceil(max(0.0, until - started_at) / 3600))
    cost = hours * price_hourly
    return round(min(cost, price_monthly) if price_monthly else cost, 4)
