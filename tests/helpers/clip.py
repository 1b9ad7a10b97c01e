"""A tiny CLIP tokenizer and model written to a local folder (hub CLIP folder layout)."""
import json
import os.path as osp

import torch

CLIP_IMAGE_SIZE = 32  # vision_config.image_size of the tiny CLIP
CLIP_MAX_LENGTH = 8  # tokenizer context length = text max_position_embeddings
CLIP_WORDS = ('a', 'red', 'cat', 'blue', 'dog', 'green', 'tree', 'on')


def save_clip_tokenizer(folder: str, words=CLIP_WORDS,
                        max_length: int = CLIP_MAX_LENGTH) -> int:
    """Writes a tiny ``CLIPTokenizer`` (letters + ``words``, no merges) to ``folder``.

    Any lowercase prompt tokenizes (to letters where no word token applies); ids 0/1 are
    ``<|startoftext|>`` / ``<|endoftext|>`` (also the padding token).

    Returns:
        int: The vocabulary size.
    """
    from transformers import CLIPTokenizer
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for char in 'abcdefghijklmnopqrstuvwxyz':
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + '</w>', len(vocab))
    for word in sorted(words):
        vocab.setdefault(word + '</w>', len(vocab))
    vocab_file, merges_file = osp.join(folder, 'vocab.json'), osp.join(folder, 'merges.txt')
    with open(vocab_file, 'w') as f:
        json.dump(vocab, f)
    with open(merges_file, 'w') as f:
        f.write('#version: 0.2\n')
    CLIPTokenizer(vocab_file, merges_file, model_max_length=max_length).save_pretrained(folder)
    return len(vocab)


def save_tiny_clip(folder: str) -> str:
    """Writes a random tiny ``CLIPModel`` and its tokenizer to ``folder``; returns it."""
    from transformers import CLIPConfig, CLIPModel
    vocab_size = save_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=CLIP_IMAGE_SIZE, patch_size=8),
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder
