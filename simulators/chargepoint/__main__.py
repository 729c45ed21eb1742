"""``python -m simulators.chargepoint`` (how the launcher starts it)."""

from simulators.chargepoint import main

raise SystemExit(main())
