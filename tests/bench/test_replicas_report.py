"""The replicas scenario's figures and their section of the report."""

from fngate.bench.replicas import _summary
from fngate.bench.report import markdown


def test_percentiles_of_the_trials_in_milliseconds():
    s = _summary([0.010, 0.020, 0.030, 0.040, 0.500])
    assert s["trials"] == 5 and s["p50_ms"] == 30.0 and s["max_ms"] == 500.0 and s["p99_ms"] == 500.0


def test_the_report_has_a_section_for_key_propagation():
    result = {"created": _summary([0.02, 0.03]), "revoked": _summary([0.025, 0.05])}
    settings = {"runs": 1, "duration": 1.0, "warmup": 0.0}
    doc = {"started": "now", "machine": {}, "settings": settings, "rows": [], "skipped": {}, "failed": {}, "notes": [], "replicas": result}
    text = markdown(doc)
    assert "## Key creation and revocation across replicas" in text
    assert "| key created | 2 | 25.0 | 30.0 | 30.0 |" in text and "| key revoked | 2 | 37.5 | 50.0 | 50.0 |" in text
