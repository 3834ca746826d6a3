"""`fngate serve` with TLS, and a function created from a JSON file with the CLI."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.request

import pytest

from .test_cli import fngate_json

EXAMPLE = {
    "name": "my-model-function",
    "inferenceUrl": "/echo",
    "inferencePort": 8000,
    "containerImage": "nvcr.io/org/my_model_image:1.0",
    "containerEnvironment": [{"key": "LOG_LEVEL", "value": "INFO"}],
    "healthUri": "/health",
    "tags": ["a", "b"],
}


@pytest.fixture
def self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_api_over_tls(fngate_serve, self_signed, monkeypatch):
    cert, key = self_signed
    sp = fngate_serve("--tls-cert", str(cert), "--tls-key", str(key))
    assert sp.api_url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(sp.api_url + "/openapi.json", context=context, timeout=10) as resp:
        assert json.loads(resp.read())["openapi"].startswith("3.")
    with pytest.raises(urllib.error.URLError):  # an untrusting client refuses it
        urllib.request.urlopen(sp.api_url + "/openapi.json", context=ssl.create_default_context(), timeout=10)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a user points the CLI at a private CA
    assert fngate_json(sp, "function", "list") == {"functions": []}


def test_function_create_from_a_json_file(fngate_serve, tmp_path):
    sp = fngate_serve()
    body = tmp_path / "fn.json"
    body.write_text(json.dumps(EXAMPLE))
    fn = fngate_json(sp, "function", "create", "--file", str(body), "--description", "from a file")["function"]
    assert fn["name"] == "my-model-function" and fn["description"] == "from a file"
    assert fn["containerEnvironment"] == EXAMPLE["containerEnvironment"] and fn["healthUri"] == "/health"
    version = fngate_json(sp, "function", "create", "--file", str(body), "--function-id", fn["id"])["function"]
    assert version["id"] == fn["id"] and version["versionId"] != fn["versionId"]
    listed = fngate_json(sp, "function", "list", fn["id"])["functions"]
    assert {f["versionId"] for f in listed} == {fn["versionId"], version["versionId"]}


def test_serve_start_failures_are_one_clear_line(tmp_path):
    import socket
    import sys

    from tests.conftest import REPO

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra, expect in (
            (["--api-port", str(port)], "address already in use"),
            (["--store", "redis://127.0.0.1:1/0"], "cannot start"),
        ):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fngate",
                    "serve",
                    "--no-samples",
                    "--data-dir",
                    str(tmp_path),
                    "--api-port",
                    "0",
                    "--http-port",
                    "0",
                    "--grpc-port",
                    "0",
                    "--admin-port",
                    "0",
                    *extra,
                ],
                capture_output=True,
                text=True,
                cwd=str(REPO),
                timeout=60,
            )
            assert proc.returncode == 1, proc.stderr
            assert expect in proc.stderr.lower() and "Traceback" not in proc.stderr
