"""gunicorn settings: everything from the environment, safe for a 1 GB VM.

Keep-alive must outlive the Google load balancer's (600 s), or the LB reuses a
connection the backend just closed and the client gets a 502.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# uvicorn with header/body timeouts and a connection cap (app/server.py).
worker_class = "app.server.Worker"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "620"))
# Recycle workers now and then: caps slow heap fragmentation from big images.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))
preload_app = False  # one storage client per worker, created after fork
accesslog = None  # the app writes JSON access lines itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
proc_name = "img2pdf"
# gunicorn 27's runtime control socket lives under $HOME by default; the service
# user has no home and nothing here needs runtime control.
control_socket_disable = True
# No proxy header rewrites the client address: the app reads X-Forwarded-For
# itself, and only from the LB's ranges (app/ratelimit.py).
forwarded_allow_ips = ""

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.observability.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}
