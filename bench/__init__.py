"""fngate's benchmarks: `python -m fngate.bench` (the end-to-end comparison) and `bench_*.py` micro benches.

Modules: procs (pinned processes, CPU and RSS from /proc), nginx (upstream and proxy
configs), fngate (the gateway under test with a static routing table), grpc_load,
loadgen (wrk, h2load), runner (alternating runs), scenarios / sse / memory (what is
measured), profile (py-spy), micro (pytest-benchmark), report (rows, ratios, targets).
"""
