"""The operators' console: web pages at `/ui`, served by the gateway itself, behind the admin key.

    routes.py       the pages and actions: one APIRouter, mounted by `app.py` when NANOROUTE_ADMIN_KEY is set
    session.py      login, the signed session cookie, CSRF tokens, logout, the brake on failed logins
    state.py        the console's parts for one gateway (sessions, series, Prometheus, templates, static files)
    series.py       this pod's last hour, read from its own metrics every step: no Prometheus needed
    prometheus.py   the same figures cluster-wide, from Prometheus' HTTP API (NANOROUTE_PROMETHEUS_URL)
    figures.py      what each page shows, as data read from the gateway's objects
    templates/      Jinja2 pages (autoescaped); static/ the console's script and styles, and vendor/ the
                    htmx and uPlot files (scripts/console-assets.sh fetches them, pinned, with their licenses)

docs/console.md says what each page shows and how it is secured.
"""
