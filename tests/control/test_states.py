"""The lifecycle table: every allowed transition and every refused one."""

import pytest

from fngate.control.states import Event, InvalidTransition, State, allowed, fact_event, next_state

S, E = State, Event

ALLOWED = {
    (S.INACTIVE, E.DEPLOY): S.DEPLOYING,
    (S.INACTIVE, E.DEPLOY_FROM_ZERO): S.ACTIVE,
    (S.INACTIVE, E.DELETE): S.DELETED,
    (S.DEPLOYING, E.MIN_READY): S.ACTIVE,
    (S.DEPLOYING, E.SOME_LOST): S.DEPLOYING,
    (S.DEPLOYING, E.ALL_LOST): S.DEPLOYING,
    (S.DEPLOYING, E.FAILED): S.ERROR,
    (S.DEPLOYING, E.UNDEPLOY): S.INACTIVE,
    (S.DEPLOYING, E.DELETE): S.DELETED,
    (S.ACTIVE, E.MIN_READY): S.ACTIVE,
    (S.ACTIVE, E.SOME_LOST): S.DEGRADING,
    (S.ACTIVE, E.ALL_LOST): S.DEGRADED,
    (S.ACTIVE, E.UNDEPLOY): S.INACTIVE,
    (S.ACTIVE, E.DELETE): S.DELETED,
    (S.DEGRADING, E.MIN_READY): S.ACTIVE,
    (S.DEGRADING, E.SOME_LOST): S.DEGRADING,
    (S.DEGRADING, E.ALL_LOST): S.DEGRADED,
    (S.DEGRADING, E.UNDEPLOY): S.INACTIVE,
    (S.DEGRADING, E.DELETE): S.DELETED,
    (S.DEGRADED, E.MIN_READY): S.ACTIVE,
    (S.DEGRADED, E.SOME_LOST): S.DEGRADING,
    (S.DEGRADED, E.ALL_LOST): S.DEGRADED,
    (S.DEGRADED, E.UNDEPLOY): S.INACTIVE,
    (S.DEGRADED, E.DELETE): S.DELETED,
    # the backend can no longer run the deployment: ERROR from any running state
    (S.DEPLOYING, E.REFUSED): S.ERROR,
    (S.ACTIVE, E.REFUSED): S.ERROR,
    (S.DEGRADING, E.REFUSED): S.ERROR,
    (S.DEGRADED, E.REFUSED): S.ERROR,
    (S.ERROR, E.ERROR_EXPIRED): S.INACTIVE,
    (S.ERROR, E.UNDEPLOY): S.INACTIVE,
    (S.ERROR, E.DELETE): S.DELETED,
}


@pytest.mark.parametrize(("state", "event"), sorted(ALLOWED, key=str))
def test_allowed_transition(state, event):
    assert allowed(state, event)
    assert next_state(state, event) is ALLOWED[(state, event)]


REFUSED = sorted({(s, e) for s in State for e in Event} - set(ALLOWED), key=str)


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_refused_transition(state, event):
    assert not allowed(state, event)
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert info.value.http_status == 400
    assert str(info.value)


def test_redeploy_message_points_at_patch():
    with pytest.raises(InvalidTransition, match="PATCH"):
        next_state("ACTIVE", "deploy")


def test_errored_deployment_must_be_removed_first():
    with pytest.raises(InvalidTransition, match="errors"):
        next_state("ERROR", "deploy")


@pytest.mark.parametrize(
    ("ready", "minimum", "event"),
    [(0, 0, E.MIN_READY), (2, 2, E.MIN_READY), (3, 2, E.MIN_READY), (1, 2, E.SOME_LOST), (0, 2, E.ALL_LOST)],
)
def test_fact_event(ready, minimum, event):
    assert fact_event(ready, minimum) is event
