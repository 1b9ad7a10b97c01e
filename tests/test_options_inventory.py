"""The option audit (tests/options_inventory.py) covers every public option, and every
test it names exists: a new option without an entry fails here."""
import os.path as osp
import re

from options_inventory import BY_READING, OPTIONS, options_of, public_objects

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_every_public_option_has_an_entry():
    found = {name: set(options_of(obj)) for name, obj in public_objects()}
    assert set(found) == set(OPTIONS), set(found) ^ set(OPTIONS)
    for name, options in found.items():
        assert options == set(OPTIONS[name]), (name, options ^ set(OPTIONS[name]))
    for name, options in BY_READING.items():
        assert options <= set(OPTIONS[name]), name


def test_every_named_test_exists():
    for owner, options in OPTIONS.items():
        for option, test in options.items():
            if test is None:
                continue
            path, _, function = test.partition('::')
            assert osp.isfile(osp.join(REPO, path)), (owner, option, test)
            if function:
                with open(osp.join(REPO, path)) as f:
                    assert re.search(rf'^def {function}\(', f.read(), re.M), (owner, option)
