"""gunicorn settings of the web process: gthread workers with keep-alive (see ARCHITECTURE.md)."""

import multiprocessing
import os
import tempfile

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = int(os.environ.get("WEB_KEEPALIVE", "30"))
# Workers share one listening socket and each takes whatever connection it accepts first, so a
# burst of keep-alive connections can land mostly on one worker (30 of 32 in one bench run),
# whose clients then wait on a single GIL while the other workers idle. WEB_REUSE_PORT=1 gives
# each worker its own SO_REUSEPORT socket and lets the kernel spread connections by hash
# instead. Off by default: another process of the same user could then bind the port too.
reuse_port = os.environ.get("WEB_REUSE_PORT", "0") == "1"
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "0"))
accesslog = None  # request logs come from our middleware as JSON, with trace ids
errorlog = "-"

# Prometheus metrics from every worker process are aggregated at /metrics.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="oms-prometheus-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
