"""``python -m services.site_page``: the site page's process (services/site_page/server.py)."""

from services.site_page.server import main

raise SystemExit(main())
