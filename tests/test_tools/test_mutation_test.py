"""tools/mutation_test.py: every mutant still applies to the current code, and a mutated
file is restored whatever happens in between."""
import importlib.util
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        'mutation_test', osp.join(REPO, 'tools', 'mutation_test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_and_names_existing_tests():
    tool = _tool()
    names = [m.name for m in tool.MUTANTS]
    assert len(names) >= 12 and len(set(names)) == len(names)
    for mutant in tool.MUTANTS:
        tool.check_mutant(mutant)  # 'before' occurs exactly once in its file
        assert mutant.tests, mutant.name
        for test in mutant.tests:
            path, _, function = test.partition('::')
            assert osp.isfile(osp.join(REPO, path)), (mutant.name, test)
            if function:
                with open(osp.join(REPO, path)) as f:
                    assert re.search(rf'^def {function}\(', f.read(), re.M), (mutant.name, test)


def test_mutant_is_restored_after_an_interrupt(tmp_path):
    tool = _tool()
    source = 'def f():\n    return 1 + 1\n'
    (tmp_path / 'mod.py').write_text(source)
    mutant = tool.Mutant('plus-minus', 'mod.py', '1 + 1', '1 - 1', ('none', ))
    with pytest.raises(KeyboardInterrupt):
        with tool.applied(mutant, root=str(tmp_path)):
            assert (tmp_path / 'mod.py').read_text() == 'def f():\n    return 1 - 1\n'
            raise KeyboardInterrupt
    assert (tmp_path / 'mod.py').read_text() == source
    with pytest.raises(ValueError, match='occurs 0 times'):
        tool.check_mutant(tool.Mutant('gone', 'mod.py', '2 + 2', '2 - 2', ('none', )),
                          root=str(tmp_path))
