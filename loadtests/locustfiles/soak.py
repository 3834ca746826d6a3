"""soak: a constant open-loop arrival rate (default 125/s per function) on HTTP, SSE and gRPC functions at once.

`fngate loadtest` names the user classes of the kinds it drives on Locust's command line;
each class has exactly `users_per_kind` scheduler users (one per Locust process).
"""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.grpc_user import ArrivalGrpc
from fngate.loadtests.invoke_users import ArrivalInvoker
from fngate.loadtests.knobs import Knobs
from fngate.loadtests.sse_user import ArrivalSse

for _user in (ArrivalInvoker, ArrivalSse, ArrivalGrpc):
    _user.fixed_count = Knobs.from_env().users_per_kind
