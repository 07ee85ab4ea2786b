"""Print where `make run` serves and how to sign in."""

import os

port = int(os.environ.get("OMS_PORT", "8000"))
print(
    f"""
  IB OMS is starting (development; demo credentials are for local use only)

  API docs     http://127.0.0.1:{port}/api/v1/docs
  Admin        http://127.0.0.1:{port}/admin/
  Metrics      http://127.0.0.1:{port}/metrics
  Streams      http://127.0.0.1:{port + 1}/  (SSE, stream process)

  Demo tenant  demo
  Sign in      admin@demo.example / demo-admin-pass

  Ctrl-C stops every process.
"""
)
