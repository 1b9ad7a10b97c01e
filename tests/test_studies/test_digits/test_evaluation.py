"""The study evaluator's pieces that do not need a feature network: the pruning-record
hash that pairs runs, and the condition given to class-conditional models."""
from types import SimpleNamespace

import torch

from mmdiff_2ndm.studies.digits.evaluation import Evaluator, record_hash


def _save(path, record):
    torch.save({'meta': {'pruning': record}}, path)
    return str(path)


def test_record_hash_tells_kept_blocks_and_channels_apart(tmp_path):
    history = [['conv_in', [0, 2]]]
    width = _save(tmp_path / 'w.pth', dict(history=history))
    same = _save(tmp_path / 'w2.pth', dict(history=history, stats={'params_after': 1}))
    assert record_hash(width) == record_hash(same)  # only what was kept counts
    assert record_hash(width) != record_hash(_save(tmp_path / 'w3.pth',
                                                   dict(history=[['conv_in', [0, 1]]])))
    # depth records have no channel history: the kept blocks must still tell them apart
    blocks = [_save(tmp_path / f'd{i}.pth', dict(history=[], depth=dict(
        module='transformer_blocks', kept=kept, num_blocks=8)))
        for i, kept in enumerate(([1, 3, 5, 7], [0, 3, 5, 7], [1, 3, 5, 7]))]
    hashes = [record_hash(path) for path in blocks]
    assert hashes[0] == hashes[2] != hashes[1]
    assert record_hash(_save(tmp_path / 'dense.pth', None)) == record_hash(
        _save(tmp_path / 'dense2.pth', None))


def test_condition_of_class_conditional_models_only():
    embedded = []

    def embed(labels):
        embedded.append(labels)
        return labels + 100

    conditional = SimpleNamespace(conditioner=SimpleNamespace(num_classes=3,
                                                              embed_labels=embed))
    unconditional = SimpleNamespace(conditioner=SimpleNamespace(num_classes=None,
                                                                embed_labels=embed))
    labels = torch.tensor([0, 2, 1])
    assert Evaluator.condition(unconditional, labels) is None and not embedded
    assert torch.equal(Evaluator.condition(conditional, labels), labels + 100)
    # every class as often, in a fixed order shared by all models
    assert Evaluator.sample_labels(conditional, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert Evaluator.sample_labels(unconditional, 3).tolist() == [0, 0, 0]
