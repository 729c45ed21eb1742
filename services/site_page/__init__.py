"""The live site page: ``view`` keeps what the bus says (pure), ``server`` is the process
(MQTT as ``scada`` + aiohttp, one event loop), ``static/`` the page the browser draws."""
