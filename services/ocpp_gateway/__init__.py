"""The OCPP gateway: the central system (CSMS) the site's chargers connect to.

``status`` (pure: OCPP words -> charger states, call answers -> results) ->
``central`` (websocket server, one handler per connected charge point) -> ``gateway`` (the process).
"""
