"""A real S3-compatible server on 127.0.0.1 for the tests (moto's server
mode), with the AWS_* variables pointing the clients at it: every S3 request
of a test goes over HTTP to this server, as it would to a bucket."""

from __future__ import annotations

import contextlib
import os

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def s3_server():
    """Start the server, set AWS_ENDPOINT_URL and dummy credentials; yield
    (endpoint, boto3 client); restore the environment after."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    old = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        import boto3

        yield endpoint, boto3.client("s3")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def upload_tree(client, local: str, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``local`` to ``s3://bucket/prefix/``; the keys."""
    keys = []
    for root, _, files in os.walk(local):
        for f in sorted(files):
            p = os.path.join(root, f)
            key = prefix.rstrip("/") + "/" + os.path.relpath(p, local).replace(os.sep, "/")
            client.upload_file(p, bucket, key)
            keys.append(key)
    return keys


def list_keys(client, bucket: str, prefix: str = "") -> dict:
    """{key: object summary} under a prefix."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out
