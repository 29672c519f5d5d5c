"""``python -m adapters.evm``: rewrite Adjudicator.json from Adjudicator.vy."""

from .artifact import main

main()
