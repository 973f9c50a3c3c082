"""``ByEventClass`` and ``EventKinds`` (projections/events.py): a class's value is the one
given for it or for its nearest base given one, whatever was looked up before."""

from __future__ import annotations

from projections.events import ByEventClass, EventKinds, WhichOf, of_kinds


class Given:
    pass


class Other:
    pass


class Child(Given):
    pass


class OtherChild(Other):
    pass


class Both(OtherChild, Given):
    """Its first base has no value; a later one has."""


def test_a_class_gets_its_own_value_else_its_nearest_given_base_s_else_the_default() -> None:
    table = ByEventClass({Given: "given"}, default="none")

    assert (table[Given], table[Child], table[Other]) == ("given", "given", "none")


def test_a_base_looked_up_before_does_not_hide_a_later_base_s_value() -> None:
    table = ByEventClass({Given: "given"}, default="none")
    kinds = EventKinds(Given)

    assert (table[OtherChild], kinds[OtherChild]) == ("none", False)  # now remembered

    assert (table[Both], kinds[Both]) == ("given", True)


def test_which_of_answers_each_class_with_the_class_given_that_it_is_an_instance_of() -> None:
    which = WhichOf(Given, Other)

    classes = (Given, Child, Other, OtherChild, str)
    assert [which[cls] for cls in classes] == [Given, Given, Other, Other, None]
    assert which[Both] is Other  # of two given bases, the nearest


class _Projected:
    def __init__(self, event: object) -> None:
        self.event = event


def test_of_kinds_sifts_classes_decided_before_and_classes_never_looked_up_alike() -> None:
    kinds = EventKinds(Given)
    assert kinds[Child]  # decided: in ``exact``; Both and Other are not yet
    events = [_Projected(cls()) for cls in (Child, Other, Both, Given, OtherChild)]

    sifted = of_kinds(events, kinds)  # type: ignore[type-var]

    assert [type(e.event) for e in sifted] == [Child, Both, Given]
    assert kinds.exact == {Given: True, Child: True, Other: False, Both: True, OtherChild: False}
