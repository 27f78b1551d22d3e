"""A tiny GPT-2 language model over byte-level ids: next-token logits for a short text."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

WORDS = ["a", "b", "ab", "ba", "abc", "cab", "hello", "world"]


class TinyGPT2:
    def __init__(self, model, max_len=16):
        self.model = model
        self.max_len = max_len

    def eval(self):
        self.model.eval()

    def preprocess(self, text):
        ids = [b % 64 for b in text.encode()[: self.max_len]] or [0]
        return torch.tensor(ids + [0] * (self.max_len - len(ids)))

    def forward(self, batch):
        return self.model(input_ids=batch).logits[:, -1, :]

    def postprocess(self, logits):
        return {"next": int(logits.argmax()), "logits": logits}


def build_model():
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=64, n_positions=32)
    return TinyGPT2(GPT2LMHeadModel(config))
