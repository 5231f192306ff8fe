"""layers.records.record: what nnstep's value types rely on from @dataclass."""
import pytest

from nnstep.layers.records import Factory, FrozenInstanceError, NoInit, record, replace


@record(frozen=True)
class Point:
    x: int
    y: int = 0


@record
class Bag:
    items: list = Factory(list)


@record(frozen=True, eq=False)
class WithPost:
    a: tuple
    n: int = NoInit()

    def __post_init__(self):
        object.__setattr__(self, "n", len(self.a))


def test_init_defaults_eq_hash_repr_frozen():
    p = Point(1)
    assert (p.x, p.y) == (1, 0) and Point(1, 2) == Point(x=1, y=2) and Point(1) != Point(2)
    assert hash(Point(1, 2)) == hash(Point(1, 2)) and len({Point(1), Point(1)}) == 1
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    with pytest.raises(FrozenInstanceError):
        p.x = 3
    with pytest.raises(AttributeError):                 # FrozenInstanceError is an AttributeError
        del p.y
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(1, 2, 3)
    with pytest.raises(TypeError):
        Point(1, z=2)


def test_factory_gives_each_instance_its_own_default():
    a, b = Bag(), Bag()
    a.items.append(1)
    assert b.items == [] and Bag.__hash__ is None        # mutable and eq: unhashable, as dataclass


def test_no_init_field_set_by_post_init_and_eq_false_is_identity():
    w = WithPost((1, 2, 3))
    assert w.n == 3 and w != WithPost((1, 2, 3)) and w == w
    with pytest.raises(TypeError):
        WithPost((1,), n=2)


def test_replace_copies_with_changes():
    p = replace(Point(1, 2), y=5)
    assert p == Point(1, 5)
    assert replace(WithPost((1, 2)), a=(1,)).n == 1
