"""A real S3 server for the tests that share results through one: moto on 127.0.0.1.

A test module takes the fixture ``s3_endpoint`` by importing its function (``from .s3 import
s3_server``): pytest finds fixtures in a module's namespace, and each module that imports it gets
its own server. The function's name differs from the fixture's so that a test's ``s3_endpoint``
argument does not shadow the import.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import ENV

BUCKET = "team-results"


@pytest.fixture(scope="module", name="s3_endpoint")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port with one empty bucket; test credentials for DVC."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed: pip install dvc-s3")
    moto_server = pytest.importorskip(
        "moto.server", reason="moto's server is not installed: pip install 'moto[server]'"
    )
    boto3 = pytest.importorskip("boto3", reason="boto3 (with moto) is not installed")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    keys = {"aws_access_key_id": creds["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"]}
    boto3.client("s3", endpoint_url=url, **keys).create_bucket(Bucket=BUCKET)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**creds, "NO_PROXY": "127.0.0.1"}.items():
            mp.setitem(ENV, key, value)
        yield url
    server.stop()
