"""The HTTP API and the explorer over the store: ``create_app(store)`` gives the FastAPI app, ``serve_http`` runs it.

Imported only by the commands that serve (``neuronmap http``, ``neuronmap serve --http``): FastAPI, uvicorn and
Plotly load here, never when the command line starts.
"""

from neuronmap.service.http.app import DEFAULT_HOST, DEFAULT_PORT, create_app, serve_http

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve_http"]
