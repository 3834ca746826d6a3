"""A Locust user for NVCF's legacy pexec with polling, as one logical request.

POST `/v2/nvcf/pexec/functions/{id}`; while the answer is 202 (the instance is still
working when the poll window closes), GET `/v2/nvcf/pexec/status/{nvcf-reqid}` until it
is not. Locust records each HTTP call (`pexec: submit`, `pexec: poll`), and the user
records the whole exchange as one `PEXEC pexec` entry with its total time and the
number of polls it took; that entry carries the soak checks of the final response.
"""

from __future__ import annotations

import time

from locust import FastHttpUser, task

from .addressing import auth_headers, body, echo_headers
from .checks import CHECK, Failed, invocation_failure
from .knobs import Knobs

MAX_POLLS = 1000  # a guard against a request that never finishes; the poll window bounds each one


class PexecUser(FastHttpUser):
    network_timeout = 120.0
    connection_timeout = 10.0

    def wait_time(self) -> float:
        return self.knobs.think_time

    def on_start(self) -> None:
        self.knobs = Knobs.from_env()
        self.payload = body(self.knobs.body_size)
        self.function_id = self.knobs.function_ids[0] if self.knobs.function_ids else ""
        self.submit_path = f"/v2/nvcf/pexec/functions/{self.function_id}"

    @task
    def pexec(self) -> None:
        headers = {**auth_headers(self.knobs), **echo_headers(self.knobs), "Content-Type": "application/octet-stream"}
        started = time.perf_counter()
        resp = self.client.post(self.submit_path, data=self.payload, headers=headers, name="pexec: submit")  # type: ignore[arg-type]  # bytes bodies go out as they are; the annotation leaves bytes out
        polls = 0
        while resp.status_code == 202 and polls < MAX_POLLS:
            request_id = resp.headers.get("nvcf-reqid", "")  # type: ignore[union-attr]  # a 202 comes with headers
            if not request_id:
                break
            polls += 1
            resp = self.client.get(f"/v2/nvcf/pexec/status/{request_id}", headers=auth_headers(self.knobs), name="pexec: poll")
        failure: str | None
        if resp.status_code == 202:
            failure = f"{CHECK} still in progress after {polls} polls"
        else:
            failure = invocation_failure(
                resp.status_code or 0,
                resp.headers.get("nvcf-status") if resp.headers else None,  # type: ignore[arg-type]  # one header: a str
                len(resp.content or b""),
            )
        self.environment.events.request.fire(
            request_type="PEXEC",
            name="pexec",
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(resp.content or b""),
            exception=Failed(failure) if failure else None,
            context={"polls": polls},
        )
