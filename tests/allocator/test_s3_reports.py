"""Reports on S3 (django-storages + boto3), against moto's standalone S3 server on loopback."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE

from apps.allocator import runner
from apps.allocator.models import AllocatorJob
from tests.allocator.jobs import small_body, submit

pytestmark = [pytest.mark.django_db, pytest.mark.e2e]

BUCKET = "oms-test-reports"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=0.5)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start:\n{(tmp_path / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_reports(s3_endpoint: str, settings: Any) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["access_key"],
        aws_secret_access_key=CREDENTIALS["secret_key"],
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "reports": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "location": "reports",
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "default_acl": None,
                "querystring_auth": True,
                "signature_version": "s3v4",
                "file_overwrite": False,
                **CREDENTIALS,
            },
        },
    }
    return client


def test_report_is_stored_on_s3_and_served_by_a_presigned_link(
    s3_reports, s3_endpoint, trader, django_capture_on_commit_callbacks
):
    response, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)
    job_id = response.json_body["id"]

    assert runner.allocator_job_run(envelope=sent[0]) == "succeeded"
    link = trader.api.get(f"/allocator/jobs/{job_id}/report").json_body
    download = httpx.get(link["url"], timeout=10)

    key = f"reports/allocator/{trader.tenant.id}/{job_id}.pptx"
    assert AllocatorJob.objects.get(id=job_id).report.name == f"allocator/{trader.tenant.id}/{job_id}.pptx"
    assert [item["Key"] for item in s3_reports.list_objects_v2(Bucket=BUCKET)["Contents"]] == [key]
    url = urlsplit(link["url"])
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}" == s3_endpoint
    assert url.path == f"/{BUCKET}/{key}"
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "X-Amz-Signature" in query
    # moto's server does not check signatures or expiry (real S3 does), so only the link's form is asserted.
    assert download.status_code == 200
    assert download.headers["content-disposition"] == f'attachment; filename="allocation-report-{job_id[:8]}.pptx"'
    deck = Presentation(io.BytesIO(download.content))
    charts = [s for slide in deck.slides for s in slide.shapes if s.shape_type == MSO_SHAPE_TYPE.PICTURE]
    assert len(charts) == 4
