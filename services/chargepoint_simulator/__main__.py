"""``python -m services.chargepoint_simulator`` (how the launcher starts it)."""

from . import main

raise SystemExit(main())
