"""/openapi.json keeps the running server honest: schemathesis generates requests from the
document for every operation and checks each answer against it (status code documented,
response schema and content type as documented, never a 5xx), against a real `fngate serve`.
Bounded to a few examples per operation so `make test` stays fast.

(Driven through hypothesis directly: schemathesis' pytest plugin does not load under the
pytest this project uses.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import start_serve

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
EXAMPLES = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    sp = start_serve(tmp_path_factory.mktemp("schemathesis") / "fngate")
    yield sp
    sp.stop()


def test_every_answer_matches_the_document(served):
    schema = schemathesis.openapi.from_url(served.api_url + "/openapi.json")
    schema.config.update(base_url=served.api_url)
    auth = {"Authorization": f"Bearer {served.admin_key}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:

        @given(case=operation.as_strategy(GenerationMode.POSITIVE))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=served.api_url, headers=auth, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
