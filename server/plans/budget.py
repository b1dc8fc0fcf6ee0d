"""``budget``: the most a plan's boxes may cost, in the providers' currency.

Before a box is forged its price is quoted (the provider's catalog, ``HasPricing.quote``) and its ceiling
reserved: the price of every hour its TTL can start, capped at the monthly price. A box is forged only when
the cost of the plan's burned boxes, plus the larger of cost so far and ceiling for each live one, plus the
new box's ceiling, stays within the budget; otherwise the plan stops forging and says so. Boxes of
unpriced providers (local, Docker, Kubernetes) cost nothing here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from server.domain.cost import cost_so_far


@dataclass
class Spend:
    """One box of the plan, as far as its cost goes (kept in the plan's document in the store)."""

    name: str
    hourly: float
    monthly: float | None
    ttl_s: int
    created_at: float
    burned_at: float | None = None

    def actual(self, now: float) -> float:
        return cost_so_far(self.hourly, self.created_at, self.burned_at or now, self.monthly)

    def ceiling(self) -> float:
        return cost_so_far(self.hourly, 0.0, float(max(self.ttl_s, 1)), self.monthly)

    def committed(self, now: float) -> float:
        return self.actual(now) if self.burned_at else max(self.actual(now), self.ceiling())


def spent(boxes: list[Spend], now: float | None = None) -> float | None:
    """What the plan's priced boxes cost so far (None when none is priced)."""
    if not boxes:
        return None
    at = time.time() if now is None else now
    return round(sum(b.actual(at) for b in boxes), 4)


def refusal(boxes: list[Spend], new: Spend, budget: float, now: float | None = None) -> str | None:
    """Why forging ``new`` could take the plan over ``budget``, or None."""
    at = time.time() if now is None else now
    committed = sum(b.committed(at) for b in boxes)
    if committed + new.ceiling() <= budget + 1e-9:
        return None
    return (f"budget {budget:g} reached: the plan's boxes cost or have reserved {committed:.4f} and one more box "
            f"({new.hourly:g}/h for a TTL of {new.ttl_s // 60} min) could cost {new.ceiling():.4f}; stopped forging "
            "(raise budget, shorten boxes.ttl or pick a cheaper boxes.size)")


def dump(boxes: list[Spend]) -> list[dict[str, Any]]:
    return [b.__dict__.copy() for b in boxes]


def load(rows: list[dict[str, Any]] | None) -> list[Spend]:
    return [Spend(**row) for row in rows or []]
