"""The read-only web dashboard (``sluice ui``, and ``/ui`` under ``sluice run``).

- ``pages``: pure HTML rendering of the read model (every repo string escaped,
  inline SVG charts, relative links);
- ``actions``: the steering commands a page shows (it never writes);
- ``server``: routes under ``/ui``, the version pages poll, the per-generation
  cache and what follows the repo; ``start_dashboard`` runs one in a thread.

Static files (``static/app.js``, ``static/app.css``) are served from the
package: no build step, nothing fetched from the internet.
"""

from reconciler.ui.server import Dashboard, DashboardServer, dashboard_for, start_dashboard

__all__ = ["Dashboard", "DashboardServer", "dashboard_for", "start_dashboard"]
