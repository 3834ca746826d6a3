"""Load and soak suites for fngate (Locust), with SLI thresholds and reports: `fngate loadtest`.

Run in the fngate process (never import locust): `plan` (scenario + options -> a run),
`runner` (Locust as a child process, then SLIs and report), `slis` (CSV -> SLIs ->
verdicts, thresholds from `slis.yaml`), `report` (summary and plots), `localstack` (a
throwaway `fngate serve`), `scenarios`, `knobs`, `checks`, `addressing`.
Run inside Locust: `locustfiles/*.py` (one per scenario) and the users they import:
`invoke_users`, `arrival`, `sse_user`, `grpc_user`, `pexec_user`, `shapes`, `plugin`.
"""
