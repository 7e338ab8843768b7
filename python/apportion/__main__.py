"""`python -m apportion`: solve a seeded routing workload and print the answer's evidence."""

from __future__ import annotations

import numpy as np

from . import solve, workloads


def main() -> None:
    values, costs, budget = workloads.instance("routing", 1000, 4, seed=0)
    sol = solve(values, costs, budget)
    tiers = np.bincount(sol.choice, minlength=values.shape[1])
    print("routing workload: 1000 tasks, 4 tiers costing", costs[0].tolist())
    print(f"budget {float(budget):.1f}, spent {sol.cost:.1f}")
    print("tasks per tier:", tiers.tolist())
    print(f"value {sol.value:.4f}, bound {sol.bound:.4f}, relative gap {sol.relative_gap:.2e}, "
          f"status {sol.status}")
    print(f"shadow price {sol.shadow_price:.4f} value per unit of budget; "
          f"solved in {sol.seconds * 1e6:.0f} microseconds")


if __name__ == "__main__":
    main()
