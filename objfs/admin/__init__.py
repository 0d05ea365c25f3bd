"""The admin HTTP endpoint of ``objfs serve``: health, readiness, Prometheus metrics and a dashboard.

:mod:`.meter` counts requests of the fronts (imported by them, it depends on
nothing but ``prometheus_client``); :mod:`.metrics` turns the store's state
into metric families at scrape time; :mod:`.app` is the Starlette app and
:func:`~.app.serve_admin` runs it on Hypercorn in the current trio run.
"""
