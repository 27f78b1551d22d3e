"""A tokenizers WordPiece tokenizer (trained in-process) + a tiny transformers BERT classifier."""

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertConfig, BertForSequenceClassification

CORPUS = [
    "the film was good and the acting was great",
    "a bad plot and a boring story",
    "great music, good actors, a fine evening",
    "the worst film of the year, bad and boring",
    "an amazing story with great acting",
]
WORDS = sorted({w.strip(",") for line in CORPUS for w in line.split()})
SPECIAL = ["[UNK]", "[PAD]", "[CLS]", "[SEP]"]


def train_wordpiece(corpus=CORPUS, vocab_size=80, stable_ids=True):
    """Train WordPiece on ``corpus``.

    WordPiece training picks the same tokens every time but numbers tied ones in a hash order
    that changes with every run and process; ``stable_ids`` renumbers them sorted, so every
    process builds the same tokenizer (``stable_ids=False`` is the unreproducible build).
    """
    tokenizer = _empty(models.WordPiece(unk_token="[UNK]"))
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer)
    if not stable_ids:
        return tokenizer
    tokens = SPECIAL + sorted(set(tokenizer.get_vocab()) - set(SPECIAL))
    vocab = {token: i for i, token in enumerate(tokens)}
    return _empty(models.WordPiece(vocab=vocab, unk_token="[UNK]"))


def _empty(model):
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


class BertSentiment:
    """preprocess (WordPiece) -> forward (BERT) -> postprocess (label + scores)."""

    labels = ("negative", "positive")

    def __init__(self, tokenizer, model, max_len=16):
        self.tokenizer = tokenizer
        self.model = model
        self.max_len = max_len

    def eval(self):
        self.model.eval()

    def preprocess(self, text):
        cls, sep = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        ids = [cls, *self.tokenizer.encode(text).ids[: self.max_len - 2], sep]
        pad = self.tokenizer.token_to_id("[PAD]")
        ids = ids + [pad] * (self.max_len - len(ids))
        return torch.tensor(ids)

    def forward(self, batch):
        mask = (batch != self.tokenizer.token_to_id("[PAD]")).long()
        return self.model(input_ids=batch, attention_mask=mask).logits

    def postprocess(self, logits):
        return {"label": self.labels[int(logits.argmax())], "scores": logits}


def build_model(stable_ids=True):
    tokenizer = train_wordpiece(stable_ids=stable_ids)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertSentiment(tokenizer, BertForSequenceClassification(config))
