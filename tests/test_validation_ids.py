"""Agent ids are checked on every call; the ones that passed are remembered, and nothing else is."""

import pytest

from kodestore.errors import InvalidAgentId
from kodestore.testing import BAD_AGENT_IDS
from kodestore.validation import _VALID_IDS_KEPT, validate_agent_id


def test_bad_ids_are_refused_after_good_ones_were_remembered() -> None:
    for index in range(2 * _VALID_IDS_KEPT):  # more than are remembered: the memory starts over
        assert validate_agent_id(f"agent-{index}") == f"agent-{index}"
    for bad in BAD_AGENT_IDS:
        with pytest.raises(InvalidAgentId):
            validate_agent_id(bad)
        with pytest.raises(InvalidAgentId):
            validate_agent_id(bad)  # a refusal is not remembered as a pass


class _PosingId(str):
    """A str subclass that claims to equal, and hash like, an id that passed before."""

    def __eq__(self, other: object) -> bool:
        return other == "agent-ok" or str.__eq__(self, other) is True

    def __hash__(self) -> int:
        return hash("agent-ok")


def test_a_str_subclass_cannot_pass_as_a_remembered_id() -> None:
    validate_agent_id("agent-ok")
    with pytest.raises(InvalidAgentId):
        validate_agent_id(_PosingId("../escape"))
    assert validate_agent_id(_PosingId("also-ok")) == "also-ok"
    with pytest.raises(InvalidAgentId):
        validate_agent_id("../escape")  # a subclass that passed is not remembered either


def test_non_strings_are_refused() -> None:
    for value in (None, 7, b"agent", ["agent"]):
        with pytest.raises(InvalidAgentId):
            validate_agent_id(value)
