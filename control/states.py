"""The function-version lifecycle as a pure transition table (no I/O).

Handlers feed it user actions (deploy, undeploy, delete); the reconciler feeds it
facts it observed (enough instances ready, some lost, all lost, failed). Any
(state, event) pair missing from the table is refused with InvalidTransition,
whose message is what the API returns (400, as NVCF does for deploy conflicts).
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    INACTIVE = "INACTIVE"
    DEPLOYING = "DEPLOYING"
    ACTIVE = "ACTIVE"
    DEGRADING = "DEGRADING"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    DELETED = "DELETED"


class Event(str, Enum):
    DEPLOY = "deploy"  # a deployment with some minInstances > 0
    DEPLOY_FROM_ZERO = "deploy_from_zero"  # every spec has minInstances == 0
    MIN_READY = "min_ready"  # ready instances >= minInstances (per spec)
    SOME_LOST = "some_lost"  # 0 < ready < minInstances after having been ACTIVE
    ALL_LOST = "all_lost"  # no ready instance while minInstances > 0
    FAILED = "failed"  # cannot place, or never became healthy in time
    REFUSED = "refused"  # the backend can no longer run it at all (image gone from its catalog, backend gone)
    UNDEPLOY = "undeploy"
    ERROR_EXPIRED = "error_expired"  # an errored deployment old enough to clean up
    DELETE = "delete"


class InvalidTransition(Exception):
    http_status = 400

    def __init__(self, state: State, event: Event, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.event = event


S, E = State, Event
_DEPLOYED = (S.DEPLOYING, S.ACTIVE, S.DEGRADING, S.DEGRADED, S.ERROR)

_TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.INACTIVE, E.DEPLOY): S.DEPLOYING,
    (S.INACTIVE, E.DEPLOY_FROM_ZERO): S.ACTIVE,
    # facts while deploying: stay until min is reached, or fail
    (S.DEPLOYING, E.MIN_READY): S.ACTIVE,
    (S.DEPLOYING, E.SOME_LOST): S.DEPLOYING,
    (S.DEPLOYING, E.ALL_LOST): S.DEPLOYING,
    (S.DEPLOYING, E.FAILED): S.ERROR,
    # facts once running
    (S.ACTIVE, E.MIN_READY): S.ACTIVE,
    (S.ACTIVE, E.SOME_LOST): S.DEGRADING,
    (S.ACTIVE, E.ALL_LOST): S.DEGRADED,
    (S.DEGRADING, E.MIN_READY): S.ACTIVE,
    (S.DEGRADING, E.SOME_LOST): S.DEGRADING,
    (S.DEGRADING, E.ALL_LOST): S.DEGRADED,
    (S.DEGRADED, E.MIN_READY): S.ACTIVE,
    (S.DEGRADED, E.SOME_LOST): S.DEGRADING,
    (S.DEGRADED, E.ALL_LOST): S.DEGRADED,
    # a deployment no backend can run any more is an error in every state, not a silent ACTIVE
    **{(s, E.REFUSED): S.ERROR for s in (S.DEPLOYING, S.ACTIVE, S.DEGRADING, S.DEGRADED)},
    (S.ERROR, E.ERROR_EXPIRED): S.INACTIVE,
    **{(s, E.UNDEPLOY): S.INACTIVE for s in _DEPLOYED},
    **{(s, E.DELETE): S.DELETED for s in State if s is not S.DELETED},
}

_REFUSALS: dict[tuple[State, Event], str] = {
    **{
        (s, e): "Function is already deployed; use PATCH endpoint to update gpu-specification"
        for s in (S.DEPLOYING, S.ACTIVE, S.DEGRADING, S.DEGRADED)
        for e in (E.DEPLOY, E.DEPLOY_FROM_ZERO)
    },
    (S.ERROR, E.DEPLOY): "Function already has a deployment with errors; delete it first",
    (S.ERROR, E.DEPLOY_FROM_ZERO): "Function already has a deployment with errors; delete it first",
    (S.INACTIVE, E.UNDEPLOY): "Function is not deployed",
}

INVOKABLE = frozenset({S.ACTIVE, S.DEGRADING})
DEPLOYED = frozenset(_DEPLOYED)


def next_state(state: State | str, event: Event | str) -> State:
    """The state after `event`, or InvalidTransition when the table has no such edge."""
    state, event = State(state), Event(event)
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        message = _REFUSALS.get((state, event), f"Function in state {state.value} cannot {event.value.replace('_', ' ')}")
        raise InvalidTransition(state, event, message) from None


def allowed(state: State | str, event: Event | str) -> bool:
    return (State(state), Event(event)) in _TRANSITIONS


def fact_event(ready: int, minimum: int) -> Event:
    """Turn an observed ready-instance count into the fact event the table understands
    (the table itself keeps a DEPLOYING version DEPLOYING while instances come and go)."""
    if ready >= minimum:
        return E.MIN_READY
    if ready == 0:
        return E.ALL_LOST
    return E.SOME_LOST
